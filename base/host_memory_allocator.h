// HostMemoryAllocator: where the loader's host staging memory (the pinned ring, host-cache
// entries) comes from. With CUDA it must be page-locked so copies to a GPU are DMA; the
// CUDA module supplies that allocator (kernels/cuda_host_allocator.h) through its device
// backend (quant/device_backend.h), so the loader never depends on CUDA. In base/ because
// kernels/ implements it and loader/ uses it.
//
// Thread safety: implementations must be thread-safe.
#pragma once

#include <cstdint>

namespace loadstar {

class HostMemoryAllocator {
 public:
  virtual ~HostMemoryAllocator() = default;
  // `bytes` of memory aligned to `alignment` (a power of two), or nullptr.
  virtual void* Allocate(uint64_t bytes, uint64_t alignment) = 0;
  virtual void Free(void* ptr) = 0;
};

// aligned_alloc / free (2 MiB-aligned with MADV_HUGEPAGE for large buffers). Never deleted.
HostMemoryAllocator* DefaultHostAllocator();

}  // namespace loadstar
