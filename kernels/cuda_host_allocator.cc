#include "kernels/cuda_host_allocator.h"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <set>

#include "absl/synchronization/mutex.h"

namespace loadstar::kernels {
namespace {

constexpr uint64_t kPageBytes = 4096;

struct Registry {
  absl::Mutex mu;
  std::set<void*> pinned ABSL_GUARDED_BY(mu);
  std::set<void*> fallback ABSL_GUARDED_BY(mu);
};

Registry& GetRegistry() {
  static Registry* registry = new Registry;
  return *registry;
}

}  // namespace

void* CudaHostAllocator::Allocate(uint64_t bytes, uint64_t alignment) {
  if (bytes == 0) bytes = 1;
  Registry& r = GetRegistry();
  if (alignment <= kPageBytes) {
    void* p = nullptr;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) == cudaSuccess && p != nullptr) {
      absl::MutexLock lock(&r.mu);
      r.pinned.insert(p);
      return p;
    }
    cudaGetLastError();  // clear the error of the failed attempt
  }
  const uint64_t align = alignment < sizeof(void*) ? sizeof(void*) : alignment;
  const uint64_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded);
  if (p == nullptr) return nullptr;
  absl::MutexLock lock(&r.mu);
  r.fallback.insert(p);
  return p;
}

void CudaHostAllocator::Free(void* ptr) {
  if (ptr == nullptr) return;
  Registry& r = GetRegistry();
  bool pinned = false;
  {
    absl::MutexLock lock(&r.mu);
    if (r.pinned.erase(ptr) > 0) {
      pinned = true;
    } else if (r.fallback.erase(ptr) == 0) {
      return;  // not ours; freeing it would corrupt someone else's heap
    }
  }
  if (pinned) {
    static_cast<void>(cudaFreeHost(ptr));
  } else {
    std::free(ptr);
  }
}

int64_t CudaHostAllocator::pinned_count() const {
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  return static_cast<int64_t>(r.pinned.size());
}

int64_t CudaHostAllocator::fallback_count() const {
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  return static_cast<int64_t>(r.fallback.size());
}

CudaHostAllocator* PinnedHostAllocator() {
  static CudaHostAllocator* allocator = new CudaHostAllocator;
  return allocator;
}

}  // namespace loadstar::kernels
