#include "loader/host_communicator.h"

#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "loader/host_device.h"

namespace loadstar::loader {
namespace {

std::vector<char> Pattern(size_t n, int seed) {
  std::vector<char> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 9)) & 0xff);
  return v;
}

std::unique_ptr<HostCommunicator> Make(int ranks, uint64_t parallel_threshold = 4ull << 20) {
  HostCommunicator::Options o;
  o.num_ranks = ranks;
  o.num_threads = 3;
  o.parallel_threshold = parallel_threshold;
  auto c = HostCommunicator::Create(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(c).value();
}

class HostCommunicatorSizes : public ::testing::TestWithParam<uint64_t> {};

TEST_P(HostCommunicatorSizes, BroadcastFromEveryRootIsByteEqual) {
  const uint64_t n = GetParam();
  auto comm = Make(4, /*parallel_threshold=*/64 << 10);
  for (int root = 0; root < 4; ++root) {
    std::vector<std::vector<char>> bufs(4, std::vector<char>(n + 16, 0x5a));
    bufs[root] = Pattern(n + 16, root);
    std::vector<DeviceSpan> spans;
    for (int r = 0; r < 4; ++r) spans.push_back({r, bufs[r].data(), bufs[r].size()});
    ASSERT_TRUE(comm->Broadcast(root, spans, n).ok());
    for (int r = 0; r < 4; ++r) {
      ASSERT_EQ(0, std::memcmp(bufs[r].data(), bufs[root].data(), n)) << "rank " << r;
      if (r != root) {
        // Bytes past `bytes` are untouched.
        for (size_t i = n; i < n + 16; ++i) ASSERT_EQ(bufs[r][i], 0x5a);
      }
    }
  }
}

TEST_P(HostCommunicatorSizes, ScatterGivesEachRankItsSlice) {
  const uint64_t each = GetParam();
  auto comm = Make(3, /*parallel_threshold=*/64 << 10);
  std::vector<char> src = Pattern(3 * each, 9);
  std::vector<std::vector<char>> dst(3, std::vector<char>(each));
  std::vector<DeviceSpan> spans;
  for (int r = 0; r < 3; ++r) spans.push_back({r, dst[r].data(), each});
  ASSERT_TRUE(comm->Scatter({1, src.data(), src.size()}, spans, each).ok());
  for (int r = 0; r < 3; ++r) {
    ASSERT_EQ(0, std::memcmp(dst[r].data(), src.data() + r * each, each)) << "rank " << r;
  }
}

TEST_P(HostCommunicatorSizes, CopyIsByteEqual) {
  const uint64_t n = GetParam();
  auto comm = Make(2, /*parallel_threshold=*/64 << 10);
  std::vector<char> src = Pattern(n, 3);
  std::vector<char> dst(n + 8, 0);
  ASSERT_TRUE(comm->Copy({0, src.data(), n}, {1, dst.data(), dst.size()}).ok());
  EXPECT_EQ(0, std::memcmp(dst.data(), src.data(), n));
  EXPECT_EQ(dst[n], 0);
}

// Small (inline memcpy), odd-sized, and large enough to split into parallel chunks.
INSTANTIATE_TEST_SUITE_P(Sizes, HostCommunicatorSizes,
                         ::testing::Values(1, 4097, (5ull << 20) + 3));

TEST(HostCommunicatorTest, ScatterSkipsRootSliceInPlace) {
  auto comm = Make(2);
  std::vector<char> src = Pattern(64, 1);
  const std::vector<char> before = src;
  std::vector<char> other(32, 0);
  std::vector<DeviceSpan> dsts = {{0, src.data(), 32}, {1, other.data(), 32}};
  ASSERT_TRUE(comm->Scatter({0, src.data(), 64}, dsts, 32).ok());
  EXPECT_EQ(src, before);
  EXPECT_EQ(0, std::memcmp(other.data(), src.data() + 32, 32));
}

TEST(HostCommunicatorTest, ZeroBytesIsANoOp) {
  auto comm = Make(2);
  std::vector<DeviceSpan> spans = {{0, nullptr, 0}, {1, nullptr, 0}};
  EXPECT_TRUE(comm->Broadcast(0, spans, 0).ok());
  EXPECT_TRUE(comm->Copy({0, nullptr, 0}, {1, nullptr, 0}).ok());
  EXPECT_TRUE(comm->Scatter({0, nullptr, 0}, spans, 0).ok());
}

TEST(HostCommunicatorTest, BadRanksAreInvalidArgument) {
  auto comm = Make(2);
  std::vector<char> a(16), b(16);
  std::vector<DeviceSpan> spans = {{0, a.data(), 16}, {1, b.data(), 16}};
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Broadcast(2, spans, 16)));
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Broadcast(-1, spans, 16)));
  std::vector<DeviceSpan> swapped = {{1, a.data(), 16}, {0, b.data(), 16}};
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Broadcast(0, swapped, 16)));
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Copy({0, a.data(), 16}, {5, b.data(), 16})));
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Copy({-1, a.data(), 16}, {1, b.data(), 16})));
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Scatter({3, a.data(), 16}, spans, 8)));
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Scatter({0, a.data(), 16}, swapped, 8)));
  // Wrong number of buffers.
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Broadcast(0, std::span(spans).first(1), 16)));
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Scatter({0, a.data(), 16},
                                                    std::span(spans).first(1), 8)));
}

TEST(HostCommunicatorTest, BadSizesAreInvalidArgument) {
  auto comm = Make(2);
  std::vector<char> a(16), b(16);
  std::vector<DeviceSpan> spans = {{0, a.data(), 16}, {1, b.data(), 8}};
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Broadcast(0, spans, 16)));
  EXPECT_TRUE(comm->Broadcast(0, spans, 8).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Copy({0, a.data(), 16}, {1, b.data(), 8})));
  // Source too small for 2 x 10 bytes; destinations too small for 12.
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Scatter({0, a.data(), 16}, spans, 10)));
  std::vector<char> big(64);
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Scatter({0, big.data(), 64}, spans, 12)));
  // Null data with bytes.
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Copy({0, nullptr, 4}, {1, b.data(), 8})));
  // Overlap on the same rank.
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Copy({0, a.data(), 8}, {0, a.data() + 4, 12})));
}

TEST(HostCommunicatorTest, CreateRejectsNoRanks) {
  HostCommunicator::Options o;
  o.num_ranks = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(HostCommunicator::Create(o).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(HostCommunicator::Create({nullptr}).status()));
}

TEST(HostCommunicatorTest, ConcurrentCallsAreSerializedAndCorrect) {
  auto comm = Make(2, /*parallel_threshold=*/1 << 10);
  constexpr int kThreads = 4;
  std::vector<std::vector<char>> src, dst;
  for (int t = 0; t < kThreads; ++t) {
    src.push_back(Pattern(256 << 10, t));
    dst.emplace_back(256 << 10);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        ASSERT_TRUE(comm->Copy({0, src[t].data(), src[t].size()},
                               {1, dst[t].data(), dst[t].size()})
                        .ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(src[t], dst[t]);
}

}  // namespace
}  // namespace loadstar::loader

namespace loadstar::loader {
namespace {

TEST(CreateCommunicatorTest, HostDevicesGetAHostCommunicatorThatMovesDeviceBytes) {
  HostDevice d0(0, 64 << 20), d1(1, 64 << 20), d2(2, 64 << 20);
  auto comm = CreateCommunicator({&d0, &d1, &d2});
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->name(), "host");
  ASSERT_EQ((*comm)->size(), 3);
  constexpr uint64_t kBytes = (6 << 20) + 11;
  std::vector<Allocation> a;
  for (Device* d : std::vector<Device*>{&d0, &d1, &d2}) {
    auto alloc = d->Allocate(kBytes);
    ASSERT_TRUE(alloc.ok()) << alloc.status();
    a.push_back(*alloc);
  }
  // Replica: read once into rank 0, broadcast to the others.
  const std::vector<char> model = Pattern(kBytes, 5);
  auto t = d0.CopyToDeviceAsync(a[0], 0, model.data(), kBytes);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(d0.Wait(*t).ok());
  std::vector<DeviceSpan> spans;
  for (int r = 0; r < 3; ++r) spans.push_back({r, a[r].ptr, a[r].size});
  ASSERT_TRUE((*comm)->Broadcast(0, spans, kBytes).ok());
  std::vector<char> back(kBytes);
  for (int r = 0; r < 3; ++r) {
    Device* d = r == 0 ? static_cast<Device*>(&d0) : r == 1 ? &d1 : &d2;
    ASSERT_TRUE(d->CopyToHost(back.data(), a[r], 0, kBytes).ok());
    EXPECT_EQ(back, model) << "rank " << r;
  }
  EXPECT_TRUE(d0.Free(a[0]).ok());
  EXPECT_TRUE(d1.Free(a[1]).ok());
  EXPECT_TRUE(d2.Free(a[2]).ok());
}

TEST(CreateCommunicatorTest, EmptyOrNullDevicesAreInvalidArgument) {
  EXPECT_TRUE(absl::IsInvalidArgument(CreateCommunicator({}).status()));
  HostDevice d0(0, 1 << 20);
  EXPECT_TRUE(absl::IsInvalidArgument(CreateCommunicator({&d0, nullptr}).status()));
}

}  // namespace
}  // namespace loadstar::loader
