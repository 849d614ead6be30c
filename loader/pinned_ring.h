// PinnedRing: a fixed pool of equally sized, 4 KiB-aligned host buffers ("slots") that
// the load pipeline reads into before copying to a device. Because slots are recycled,
// a model of any size streams through a bounded amount of staging memory.
//
// With CUDA the slots must be page-locked (cudaHostAlloc) so copies to the GPU are DMA;
// the memory comes from a HostMemoryAllocator (base/host_memory_allocator.h), which the
// CUDA device backend supplies (StagingAllocatorFor, loader/device_backends.h) without
// loader/ depending on CUDA. The default allocator is aligned_alloc.
//
// Thread safety: Acquire/TryAcquire/Release may be called from any thread.
#pragma once

#include <cstdint>
#include <vector>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/host_memory_allocator.h"

namespace loadstar::loader {

// The allocator interface is base's; loader code names it loader::HostMemoryAllocator.
using ::loadstar::DefaultHostAllocator;
using ::loadstar::HostMemoryAllocator;

class PinnedRing {
 public:
  struct Options {
    uint64_t total_bytes = 256ull << 20;
    // A multiple of 4 KiB (O_DIRECT reads land in slots).
    uint64_t slot_bytes = 16ull << 20;
    HostMemoryAllocator* allocator = nullptr;  // nullptr: DefaultHostAllocator()
  };

  struct Slot {
    int index = -1;
    char* data = nullptr;
    uint64_t size = 0;
  };

  // At least one slot: total_bytes smaller than slot_bytes gives one slot of total_bytes
  // rounded up to 4 KiB.
  static absl::StatusOr<std::unique_ptr<PinnedRing>> Create(const Options& options);
  ~PinnedRing();
  PinnedRing(const PinnedRing&) = delete;
  PinnedRing& operator=(const PinnedRing&) = delete;

  // Blocks until a slot is free.
  Slot Acquire();
  // A free slot, or nullopt when all are in use.
  std::optional<Slot> TryAcquire();
  // Returns a slot from Acquire/TryAcquire. REQUIRES: the slot is held by the caller.
  void Release(const Slot& slot);

  int slot_count() const { return slot_count_; }
  uint64_t slot_bytes() const { return slot_bytes_; }
  int free_slots() const;

 private:
  PinnedRing(HostMemoryAllocator* allocator, char* base, int slot_count, uint64_t slot_bytes);
  bool HasFree() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !free_.empty(); }
  Slot SlotAt(int index) const;

  HostMemoryAllocator* const allocator_;
  char* const base_;
  const int slot_count_;
  const uint64_t slot_bytes_;
  mutable absl::Mutex mu_;
  // LIFO: the slot released last is handed out next, so a worker keeps reusing a buffer
  // that is still in its cache (and already faulted in) instead of cycling through them all.
  std::vector<int> free_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::loader
