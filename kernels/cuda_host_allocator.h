// Page-locked host memory for the pinned ring and the host cache: cudaHostAlloc
// (portable, so every GPU of the process can DMA from it), falling back to ordinary
// aligned memory when pinning fails (no driver, RLIMIT_MEMLOCK, pinned memory exhausted):
// copies from it then run at pageable speed but still work.
//
// Thread safety: Allocate/Free are thread-safe.
#pragma once

#include <cstdint>

#include "base/host_memory_allocator.h"

namespace loadstar::kernels {

class CudaHostAllocator : public HostMemoryAllocator {
 public:
  // `alignment` up to 4096 is satisfied by cudaHostAlloc (page-aligned); larger ones use
  // aligned memory.
  void* Allocate(uint64_t bytes, uint64_t alignment) override;
  void Free(void* ptr) override;

  // Allocations currently served pinned / by the fallback (for tests and metrics).
  int64_t pinned_count() const;
  int64_t fallback_count() const;
};

// The process-wide instance. Never deleted.
CudaHostAllocator* PinnedHostAllocator();

}  // namespace loadstar::kernels
