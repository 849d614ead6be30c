#include "loader/pinned_ring.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace loadstar::loader {
namespace {

class CountingAllocator : public HostMemoryAllocator {
 public:
  void* Allocate(uint64_t bytes, uint64_t alignment) override {
    ++allocs;
    return DefaultHostAllocator()->Allocate(bytes, alignment);
  }
  void Free(void* ptr) override {
    ++frees;
    DefaultHostAllocator()->Free(ptr);
  }
  std::atomic<int> allocs{0}, frees{0};
};

TEST(PinnedRingTest, SlotsAreAlignedDistinctAndRecycled) {
  CountingAllocator allocator;
  {
    auto ring = PinnedRing::Create({1 << 20, 256 << 10, &allocator});
    ASSERT_TRUE(ring.ok());
    EXPECT_EQ((*ring)->slot_count(), 4);
    std::vector<PinnedRing::Slot> slots;
    for (int i = 0; i < 4; ++i) slots.push_back((*ring)->Acquire());
    EXPECT_FALSE((*ring)->TryAcquire().has_value());
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(slots[i].data) % 4096, 0u);
      for (int j = 0; j < i; ++j) EXPECT_NE(slots[i].data, slots[j].data);
    }
    (*ring)->Release(slots[2]);
    auto again = (*ring)->TryAcquire();
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->data, slots[2].data);
  }
  EXPECT_EQ(allocator.allocs, 1);  // one region: one cudaHostAlloc with CUDA
  EXPECT_EQ(allocator.frees, 1);
}

TEST(PinnedRingTest, AcquireBlocksUntilRelease) {
  auto ring = PinnedRing::Create({8192, 4096, nullptr});
  ASSERT_TRUE(ring.ok());
  PinnedRing& r = **ring;
  std::atomic<int> in_use{0}, max_in_use{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        PinnedRing::Slot s = r.Acquire();
        int now = ++in_use;
        int prev = max_in_use.load();
        while (now > prev && !max_in_use.compare_exchange_weak(prev, now)) {
        }
        s.data[0] = 1;
        --in_use;
        r.Release(s);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(max_in_use.load(), 2);
  EXPECT_EQ(r.free_slots(), 2);
}

TEST(PinnedRingTest, RejectsBadSizes) {
  EXPECT_FALSE(PinnedRing::Create({1 << 20, 1000, nullptr}).ok());
  EXPECT_FALSE(PinnedRing::Create({0, 4096, nullptr}).ok());
  auto tiny = PinnedRing::Create({5000, 1 << 20, nullptr});  // one rounded-up slot
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ((*tiny)->slot_count(), 1);
  EXPECT_EQ((*tiny)->slot_bytes(), 8192u);
}

}  // namespace
}  // namespace loadstar::loader
