#include "base/host_memory_allocator.h"

#include <sys/mman.h>

#include <cstdlib>

namespace loadstar {
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

}  // namespace loadstar
