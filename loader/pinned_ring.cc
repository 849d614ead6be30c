#include "loader/pinned_ring.h"

#include <sys/mman.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "base/env.h"

namespace loadstar::loader {
namespace {

class AlignedHostAllocator final : public HostMemoryAllocator {
 public:
  void* Allocate(uint64_t bytes, uint64_t alignment) override {
    // Large buffers (ring, cache entries) on 2 MiB boundaries and, where the kernel allows
    // it, huge pages: first-touching them then costs one fault per 2 MiB, not per 4 KiB.
    constexpr uint64_t kHuge = 2ull << 20;
    if (bytes >= kHuge && alignment < kHuge) alignment = kHuge;
    // aligned_alloc wants a size that is a multiple of the alignment.
    uint64_t rounded = (bytes + alignment - 1) / alignment * alignment;
    void* p = std::aligned_alloc(alignment, rounded);
    if (p != nullptr && rounded >= kHuge) ::madvise(p, rounded, MADV_HUGEPAGE);
    return p;
  }
  void Free(void* ptr) override { std::free(ptr); }
};

}  // namespace

HostMemoryAllocator* DefaultHostAllocator() {
  static auto* allocator = new AlignedHostAllocator();
  return allocator;
}

absl::StatusOr<std::unique_ptr<PinnedRing>> PinnedRing::Create(const Options& options) {
  if (options.slot_bytes == 0 || options.slot_bytes % kDirectIoAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring slot size ", options.slot_bytes, " is not a positive multiple of 4096"));
  }
  if (options.total_bytes == 0) {
    return absl::InvalidArgumentError("ring size must be positive");
  }
  uint64_t slot_bytes = options.slot_bytes;
  uint64_t count = options.total_bytes / slot_bytes;
  if (count == 0) {
    count = 1;
    slot_bytes = (options.total_bytes + kDirectIoAlignment - 1) / kDirectIoAlignment *
                 kDirectIoAlignment;
  }
  if (count > (1u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("ring of ", count, " slots is too many"));
  }
  HostMemoryAllocator* allocator =
      options.allocator != nullptr ? options.allocator : DefaultHostAllocator();
  void* base = allocator->Allocate(count * slot_bytes, kDirectIoAlignment);
  if (base == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate a ", count * slot_bytes, "-byte staging ring"));
  }
  return std::unique_ptr<PinnedRing>(new PinnedRing(allocator, static_cast<char*>(base),
                                                    static_cast<int>(count), slot_bytes));
}

PinnedRing::PinnedRing(HostMemoryAllocator* allocator, char* base, int slot_count,
                       uint64_t slot_bytes)
    : allocator_(allocator), base_(base), slot_count_(slot_count), slot_bytes_(slot_bytes) {
  for (int i = slot_count - 1; i >= 0; --i) free_.push_back(i);
}

PinnedRing::~PinnedRing() { allocator_->Free(base_); }

PinnedRing::Slot PinnedRing::SlotAt(int index) const {
  return Slot{index, base_ + static_cast<uint64_t>(index) * slot_bytes_, slot_bytes_};
}

PinnedRing::Slot PinnedRing::Acquire() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &PinnedRing::HasFree));
  int index = free_.back();
  free_.pop_back();
  return SlotAt(index);
}

std::optional<PinnedRing::Slot> PinnedRing::TryAcquire() {
  absl::MutexLock lock(&mu_);
  if (free_.empty()) return std::nullopt;
  int index = free_.back();
  free_.pop_back();
  return SlotAt(index);
}

void PinnedRing::Release(const Slot& slot) {
  absl::MutexLock lock(&mu_);
  free_.push_back(slot.index);
}

int PinnedRing::free_slots() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(free_.size());
}

}  // namespace loadstar::loader
