#include "kernels/cuda_device.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_host_allocator.h"
#include "loader/cuda_devices.h"
#include "tests/kernels/gpu_test_util.h"

namespace loadstar::kernels {
namespace {

TEST(CudaDeviceTest, NoGpuIsFailedPreconditionNotACrash) {
  auto count = UsableGpuCount();
  if (count.ok()) GTEST_SKIP() << "a GPU is usable here";
  EXPECT_TRUE(absl::IsFailedPrecondition(count.status())) << count.status();
  EXPECT_NE(std::string(count.status().message()).find("no usable GPU: "), std::string::npos);
  auto devices = CreateCudaDevices();
  EXPECT_TRUE(absl::IsFailedPrecondition(devices.status())) << devices.status();
  std::string reason;
  EXPECT_FALSE(loader::CudaUsable(&reason));
  EXPECT_NE(reason.find("no usable GPU"), std::string::npos) << reason;
  EXPECT_TRUE(absl::IsFailedPrecondition(loader::CreateCudaDevices().status()));
}

TEST(CudaHostAllocatorTest, AllocatesAlignedMemoryPinnedOrNot) {
  CudaHostAllocator* allocator = PinnedHostAllocator();
  void* p = allocator->Allocate(1 << 20, 4096);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 4096, 0u);
  std::memset(p, 0xab, 1 << 20);  // writable
  EXPECT_EQ(allocator->pinned_count() + allocator->fallback_count(), 1);
  if (!UsableGpuCount().ok()) {
    EXPECT_EQ(allocator->fallback_count(), 1);
  }
  allocator->Free(p);
  EXPECT_EQ(allocator->pinned_count() + allocator->fallback_count(), 0);
  allocator->Free(nullptr);
}

TEST(CudaDeviceTest, CopyInAndOutIsByteEqual) {
  SKIP_WITHOUT_GPU();
  auto device = CudaDevice::Create({.ordinal = 0, .copy_lanes = 3});
  ASSERT_TRUE(device.ok()) << device.status();
  CudaDevice& d = **device;
  EXPECT_EQ(d.name(), "cuda:0");
  EXPECT_EQ(d.kind(), loader::DeviceKind::kCuda);
  EXPECT_GT(d.total_memory(), 0u);
  EXPECT_LE(d.free_memory(), d.total_memory());
  constexpr uint64_t kBytes = (8 << 20) + 5;
  std::vector<uint8_t> src(kBytes);
  for (uint64_t i = 0; i < kBytes; ++i) src[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
  auto a = d.Allocate(kBytes);
  ASSERT_TRUE(a.ok()) << a.status();
  // Several chunks over the lanes, as the pipeline does.
  std::vector<loader::CopyTicket> tickets;
  constexpr uint64_t kChunk = 1 << 20;
  for (uint64_t off = 0; off < kBytes; off += kChunk) {
    auto t = d.CopyToDeviceAsync(*a, off, src.data() + off, std::min(kChunk, kBytes - off));
    ASSERT_TRUE(t.ok()) << t.status();
    tickets.push_back(*t);
  }
  for (auto t : tickets) ASSERT_TRUE(d.Wait(t).ok());
  EXPECT_TRUE(absl::IsNotFound(d.Wait(tickets[0])));
  std::vector<uint8_t> back(kBytes);
  ASSERT_TRUE(d.CopyToHost(back.data(), *a, 0, kBytes).ok());
  EXPECT_EQ(back, src);
  EXPECT_TRUE(absl::IsOutOfRange(d.CopyToDeviceAsync(*a, kBytes - 1, src.data(), 2).status()));
  EXPECT_TRUE(absl::IsOutOfRange(d.CopyToHost(back.data(), *a, 1, kBytes)));
  auto handle = d.Export(*a);
  ASSERT_TRUE(handle.ok()) << handle.status();
  EXPECT_EQ(handle->kind, loader::DeviceKind::kCuda);
  EXPECT_EQ(handle->ipc_handle.size(), 64u);
  EXPECT_EQ(handle->device_uuid.rfind("GPU-", 0), 0u) << handle->device_uuid;
  EXPECT_EQ(handle->size, kBytes);
  ASSERT_TRUE(d.Free(*a).ok());
  EXPECT_TRUE(absl::IsNotFound(d.Free(*a)));
}

TEST(CudaDeviceTest, PinnedSourceCopies) {
  SKIP_WITHOUT_GPU();
  auto device = CudaDevice::Create({});
  ASSERT_TRUE(device.ok()) << device.status();
  void* pinned = PinnedHostAllocator()->Allocate(1 << 20, 4096);
  ASSERT_NE(pinned, nullptr);
  EXPECT_GE(PinnedHostAllocator()->pinned_count(), 1);
  std::memset(pinned, 0x5c, 1 << 20);
  auto a = (*device)->Allocate(1 << 20);
  ASSERT_TRUE(a.ok());
  auto t = (*device)->CopyToDeviceAsync(*a, 0, pinned, 1 << 20);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*device)->Wait(*t).ok());
  std::vector<uint8_t> back(1 << 20);
  ASSERT_TRUE((*device)->CopyToHost(back.data(), *a, 0, back.size()).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), pinned, back.size()));
  EXPECT_TRUE((*device)->Free(*a).ok());
  PinnedHostAllocator()->Free(pinned);
}

TEST(CudaDeviceTest, CreateCudaDevicesNamesEveryGpu) {
  SKIP_WITHOUT_GPU();
  auto devices = CreateCudaDevices();
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_EQ(static_cast<int>(devices->size()), *UsableGpuCount());
  for (size_t i = 0; i < devices->size(); ++i) {
    EXPECT_EQ((*devices)[i]->name(), "cuda:" + std::to_string(i));
  }
  EXPECT_TRUE(absl::IsInvalidArgument(CudaDevice::Create({.ordinal = 1000}).status()));
}

}  // namespace
}  // namespace loadstar::kernels
