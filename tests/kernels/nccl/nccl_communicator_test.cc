#include "kernels/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/gpu_test_util.h"

namespace loadstar::kernels {
namespace {

// Device buffer on `ordinal`, filled from / read back to host vectors.
// cudaMemset and a pageable cudaMemcpy run on the legacy stream and may return before the
// device has the bytes; NCCL runs on non-blocking streams that do not wait for the legacy
// stream. So every fill synchronizes the device before NCCL may touch the buffer.
struct GpuBuffer {
  int ordinal = 0;
  void* ptr = nullptr;
  uint64_t size = 0;
  GpuBuffer(int o, uint64_t n) : ordinal(o), size(n) {
    cudaSetDevice(o);
    EXPECT_EQ(cudaMalloc(&ptr, n), cudaSuccess);
    EXPECT_EQ(cudaMemset(ptr, 0, n), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  ~GpuBuffer() {
    cudaSetDevice(ordinal);
    cudaFree(ptr);
  }
  void Fill(const std::vector<uint8_t>& v) {
    cudaSetDevice(ordinal);
    EXPECT_EQ(cudaMemcpy(ptr, v.data(), v.size(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  std::vector<uint8_t> Read(uint64_t n) {
    std::vector<uint8_t> v(n);
    cudaSetDevice(ordinal);
    EXPECT_EQ(cudaMemcpy(v.data(), ptr, n, cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  DeviceSpan Span(int rank) const { return {rank, ptr, size}; }
};

TEST(NcclCommunicatorTest, NoGpuIsFailedPrecondition) {
  if (UsableGpuCount().ok()) GTEST_SKIP() << "a GPU is usable here";
  auto comm = NcclCommunicator::Create();
  EXPECT_TRUE(absl::IsFailedPrecondition(comm.status())) << comm.status();
}

TEST(NcclCommunicatorTest, SingleGpuCopyAndBadRanks) {
  SKIP_WITHOUT_GPU();
  auto comm = NcclCommunicator::Create({0});
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->size(), 1);
  const uint64_t n = (3 << 20) + 1;
  GpuBuffer a(0, n), b(0, n);
  const auto data = BytePattern(n, 1);
  a.Fill(data);
  ASSERT_TRUE((*comm)->Copy(a.Span(0), b.Span(0)).ok());
  EXPECT_EQ(b.Read(n), data);
  EXPECT_TRUE(absl::IsInvalidArgument((*comm)->Copy(a.Span(0), b.Span(1))));
  std::vector<DeviceSpan> spans = {a.Span(0)};
  EXPECT_TRUE(absl::IsInvalidArgument((*comm)->Broadcast(1, spans, n)));
  EXPECT_TRUE(absl::IsInvalidArgument((*comm)->Broadcast(0, spans, n + 1)));
  EXPECT_TRUE((*comm)->Broadcast(0, spans, n).ok());
}

TEST(NcclCommunicatorTest, BroadcastScatterCopyAcrossGpusAreByteEqual) {
  SKIP_WITHOUT_GPUS(2);
  auto comm = NcclCommunicator::Create();
  ASSERT_TRUE(comm.ok()) << comm.status();
  const int ranks = (*comm)->size();
  const uint64_t n = (16 << 20) + 3;
  std::vector<std::unique_ptr<GpuBuffer>> bufs;
  for (int r = 0; r < ranks; ++r) bufs.push_back(std::make_unique<GpuBuffer>(r, n));
  const auto data = BytePattern(n, 2);
  bufs[1]->Fill(data);
  std::vector<DeviceSpan> spans;
  for (int r = 0; r < ranks; ++r) spans.push_back(bufs[r]->Span(r));
  ASSERT_TRUE((*comm)->Broadcast(1, spans, n).ok());
  for (int r = 0; r < ranks; ++r) EXPECT_EQ(bufs[r]->Read(n), data) << "rank " << r;

  // Scatter from rank 0: slice r of the source lands on rank r.
  const uint64_t each = n / ranks;
  GpuBuffer src(0, each * ranks);
  const auto whole = BytePattern(each * ranks, 3);
  src.Fill(whole);
  ASSERT_TRUE((*comm)->Scatter(src.Span(0), spans, each).ok());
  for (int r = 0; r < ranks; ++r) {
    EXPECT_EQ(bufs[r]->Read(each),
              std::vector<uint8_t>(whole.begin() + r * each, whole.begin() + (r + 1) * each))
        << "rank " << r;
  }

  // Warm scale-out: copy rank 0's buffer to rank 1.
  const auto again = BytePattern(n, 4);
  bufs[0]->Fill(again);
  ASSERT_TRUE((*comm)->Copy(bufs[0]->Span(0), bufs[1]->Span(1)).ok());
  EXPECT_EQ(bufs[1]->Read(n), again);
}

}  // namespace
}  // namespace loadstar::kernels
