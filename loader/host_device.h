// HostDevice: an emulated accelerator whose memory is POSIX shared memory, so a consumer
// process on the same host can map a loaded model without copying it (Export gives the
// shm name, and for pooled memory the allocation's offset in it; the consumer does
// shm_open + mmap of exactly that range). Used on CPU-only machines, in tests, and as the
// reference implementation of the Device contract (loader/device.h).
//
// Two kinds of memory:
//  - Fresh (the constructor; `loadstar load`, tests): one shm object per allocation,
//    created by Allocate. A copy allocates its pages with MADV_POPULATE_WRITE on our
//    mapping and then memcpys. Not pwrite: shmem's write path holds the object's inode
//    lock, so the loader's threads filling one allocation ran one at a time while the
//    others spun on the lock (0.3 GB/s for a 4 GiB model here); populating faults run in
//    parallel. (pwrite remains the fallback on kernels without POPULATE_WRITE.) Pages are
//    not reserved up front (fallocate would cost a zeroing pass inside every load): a
//    full /dev/shm shows up as ResourceExhausted from the copy that hits it (the populate
//    fails), never as a SIGBUS. Freed memory may be
//    kept for reuse (`retain_bytes`, renamed at reuse).
//  - Pooled (CreatePooled; a worker's devices, bench_load's steady state): the device's
//    whole memory is one shm object, created and populated at start (MADV_POPULATE_WRITE
//    on a background thread, so starting a worker does not wait for it), from which
//    allocations are carved at page-aligned offsets, as a GPU's memory is there before
//    any model. Pooled memory is resident and mapped, so loads fill it at memcpy speed
//    (ReadsInPlace), never faulting per page. One object rather than a set of retained
//    regions: no region-size matching (any free range fits any model), one mapping, and
//    the pool's size is fixed, so /dev/shm cannot fill up under a load.
//    Invariant: every byte of the pool outside live allocations is zero. Free zeroes the
//    whole freed range (padding and the tail of its last page included) before it can be
//    handed out again, so no byte of a previous model is readable through the next one's
//    range; the cost is paid at unload, not on the load path. Population keeps ahead of
//    use: an Allocate whose range is not populated yet waits for the populator; if
//    population failed (no room in /dev/shm) ranges past what was populated are
//    ResourceExhausted, so no copy ever writes into a page that might SIGBUS.
//    A consumer that maps an allocation's range sees only that range; the object as a
//    whole is the user's (mode 0600), as the per-allocation objects are.
//
// Thread safety: every method is thread-safe (Device contract 3).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "loader/device.h"

namespace loadstar::loader {

// The prefix of the shm object names process `pid` gives host-device memory:
// "/loadstar-<pid>-<start>-", <start> being the process's start time (/proc/<pid>/stat),
// so a process that gets the pid of a dead one never collides with objects the dead one
// left behind (a killed worker cannot unlink them). Empty if `pid` is not running.
std::string HostShmPrefix(int pid);

// Unlinks the host-device shm objects left in /dev/shm by loadstar processes that are no
// longer running (a worker killed with SIGKILL cannot unlink its own), so their memory
// returns to the system. Objects of live processes are kept; a consumer that still maps
// a removed object keeps its mapping. Returns how many objects were removed.
int RemoveStaleHostShm();

class HostDevice final : public Device {
 public:
  // `index` names the device ("host:<index>"); `memory_bytes` bounds the sum of its live
  // allocations. Up to `retain_bytes` of freed memory is kept (renamed, mapped, its pages
  // resident) and handed out again by later allocations, as a GPU's memory stays there
  // between models: a reused allocation is filled at memcpy speed and is ReadsInPlace.
  HostDevice(int index, uint64_t memory_bytes, uint64_t retain_bytes = 0);
  // A pooled device: one shm object of `memory_bytes` (rounded up to pages) created now
  // and populated on a background thread (see the header comment). Fails when the object
  // cannot be created or sized.
  static absl::StatusOr<std::unique_ptr<HostDevice>> CreatePooled(int index,
                                                                  uint64_t memory_bytes);
  ~HostDevice() override;  // frees (unmaps and unlinks) every allocation still live

  DeviceKind kind() const override { return DeviceKind::kHost; }
  std::string name() const override;
  uint64_t total_memory() const override { return memory_bytes_; }
  uint64_t free_memory() const override;

  absl::StatusOr<Allocation> Allocate(uint64_t bytes) override;
  absl::Status Free(const Allocation& allocation) override;
  absl::StatusOr<CopyTicket> CopyToDeviceAsync(const Allocation& dst, uint64_t offset,
                                               const void* src, uint64_t bytes) override;
  absl::Status Wait(CopyTicket ticket) override;
  absl::Status CopyToHost(void* dst, const Allocation& src, uint64_t offset,
                          uint64_t bytes) override;
  absl::StatusOr<ExportedHandle> Export(const Allocation& allocation) override;
  bool ReadsInPlace(const Allocation& allocation) const override;
  // Fresh memory: allocates the range's pages (MADV_POPULATE_WRITE); pooled: nothing to do.
  absl::Status PrepareInPlaceWrite(const Allocation& allocation, uint64_t offset,
                                   uint64_t bytes) override;

  // Live allocations (for tests: a failed or cancelled load leaves none behind).
  int live_allocations() const;
  // Bytes of freed memory kept for reuse.
  uint64_t retained_bytes() const;
  bool pooled() const { return pool_ptr_ != nullptr; }
  // Pooled: blocks until the whole pool is populated; returns why population stopped
  // early (OK for a fresh device).
  absl::Status WaitPopulated() const;

 private:
  struct Region {
    std::string shm_name;
    int fd = -1;  // kept open for pwrite/pread copies (pooled: the pool's, not owned)
    uint64_t offset = 0;  // pooled: where the range starts in the pool object
    void* ptr = nullptr;
    uint64_t size = 0;         // as requested
    uint64_t mapped_size = 0;  // rounded up to whole pages, at least one
    // Every page is mapped in this process (page-table entries present): copies through
    // `ptr` then run at memcpy speed instead of faulting page by page.
    bool populated = false;
  };

  // Checks that [offset, offset+bytes) lies inside a live allocation `a`; returns its fd.
  absl::StatusOr<int> CheckRange(const Allocation& a, uint64_t offset, uint64_t bytes) const;
  static void Unmap(const Region& region);
  // The status of a failed populate (errno `err`) of allocation `a`.
  absl::Status PopulateError(const Allocation& a, int err) const;
  absl::StatusOr<Allocation> AllocatePooled(uint64_t bytes);
  void FreePooled(Region region);
  // Returns [offset, offset+length) to the pool's free list, merged with its neighbours.
  void AddFreeRangeLocked(uint64_t offset, uint64_t length) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The pool's populator thread: MADV_POPULATE_WRITE step by step from offset 0.
  void Populate();
  // Takes a retained region of at least `mapped_size` bytes (the smallest that fits, and
  // at most twice that), renamed to a fresh name; nullopt if none.
  std::optional<Region> TakeRetained(uint64_t mapped_size);

  const int index_;
  const uint64_t memory_bytes_;
  const uint64_t retain_bytes_;
  mutable absl::Mutex mu_;
  uint64_t retained_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Region> retained_ ABSL_GUARDED_BY(mu_);
  uint64_t used_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, Region> regions_ ABSL_GUARDED_BY(mu_);

  // The pool (pooled devices only; pool_ptr_ == nullptr otherwise).
  std::string pool_name_;
  int pool_fd_ = -1;
  char* pool_ptr_ = nullptr;
  uint64_t pool_bytes_ = 0;
  std::map<uint64_t, uint64_t> free_ranges_ ABSL_GUARDED_BY(mu_);  // offset -> length
  uint64_t populated_end_ ABSL_GUARDED_BY(mu_) = 0;
  bool populating_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status populate_error_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_populating_{false};
  std::thread populator_;
};

}  // namespace loadstar::loader
