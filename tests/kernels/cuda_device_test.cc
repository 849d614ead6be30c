#include "kernels/cuda_device.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "deploy/client/cuda_ipc.h"
#include "gtest/gtest.h"
#include "kernels/cuda_host_allocator.h"
#include "loader/device.h"
#include "loader/pinned_ring.h"
#include "tests/kernels/cuda_backend_test_util.h"
#include "tests/kernels/gpu_test_util.h"
#include "tests/util/test_util.h"

namespace loadstar::kernels {
namespace {

TEST(CudaDeviceTest, NoGpuIsFailedPreconditionNotACrash) {
  auto count = UsableGpuCount();
  if (count.ok()) GTEST_SKIP() << "a GPU is usable here";
  EXPECT_TRUE(absl::IsFailedPrecondition(count.status())) << count.status();
  EXPECT_NE(std::string(count.status().message()).find("no usable GPU: "), std::string::npos);
  auto devices = CreateCudaDevices();
  EXPECT_TRUE(absl::IsFailedPrecondition(devices.status())) << devices.status();
  // The same answer through the loader's registry (what CreateDevices("cuda") asks).
  RegisterCudaBackendOnce();
  absl::Status usable = StaticCudaBackend()->Usable();
  EXPECT_NE(std::string(usable.message()).find("no usable GPU"), std::string::npos) << usable;
  auto via_loader = loader::CreateDevices("cuda");
  EXPECT_TRUE(absl::IsFailedPrecondition(via_loader.status())) << via_loader.status();
  EXPECT_NE(std::string(via_loader.status().message()).find("no usable GPU"),
            std::string::npos)
      << via_loader.status();
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
  EXPECT_EQ(d.kind(), DeviceKind::kCuda);
  EXPECT_GT(d.total_memory(), 0u);
  EXPECT_LE(d.free_memory(), d.total_memory());
  constexpr uint64_t kBytes = (8 << 20) + 5;
  std::vector<uint8_t> src(kBytes);
  for (uint64_t i = 0; i < kBytes; ++i) src[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
  auto a = d.Allocate(kBytes);
  ASSERT_TRUE(a.ok()) << a.status();
  // Several chunks over the lanes, as the pipeline does.
  std::vector<CopyTicket> tickets;
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
  EXPECT_EQ(handle->kind, DeviceKind::kCuda);
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

std::string Hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

TEST(CudaDeviceTest, CopyToHostWaitsForCopiesNotYetWaitedFor) {
  SKIP_WITHOUT_GPU();
  auto device = CudaDevice::Create({.ordinal = 0, .copy_lanes = 4});
  ASSERT_TRUE(device.ok()) << device.status();
  // Pinned source, so the copies really are asynchronous; big enough to still be in
  // flight when CopyToHost starts.
  constexpr uint64_t kBytes = 256ull << 20, kChunk = 8ull << 20;
  auto* src = static_cast<uint8_t*>(PinnedHostAllocator()->Allocate(kBytes, 4096));
  ASSERT_NE(src, nullptr);
  for (uint64_t i = 0; i < kBytes; i += 4096) std::memset(src + i, static_cast<int>(i >> 12), 4096);
  auto a = (*device)->Allocate(kBytes);
  ASSERT_TRUE(a.ok()) << a.status();
  std::vector<CopyTicket> tickets;
  for (uint64_t off = 0; off < kBytes; off += kChunk) {
    auto t = (*device)->CopyToDeviceAsync(*a, off, src + off, kChunk);
    ASSERT_TRUE(t.ok()) << t.status();
    tickets.push_back(*t);
  }
  std::vector<uint8_t> back(kBytes);
  ASSERT_TRUE((*device)->CopyToHost(back.data(), *a, 0, kBytes).ok());  // no Wait first
  EXPECT_EQ(0, std::memcmp(back.data(), src, kBytes));
  for (auto t : tickets) EXPECT_TRUE((*device)->Wait(t).ok());
  EXPECT_TRUE((*device)->Free(*a).ok());
  PinnedHostAllocator()->Free(src);
}

// The pipeline's staging: a PinnedRing over the pinned allocator, every slot in flight
// on its own lane at once, then recycled.
TEST(CudaDeviceTest, PinnedRingSlotsStreamThroughTheCopyLanes) {
  SKIP_WITHOUT_GPU();
  auto ring = loader::PinnedRing::Create(
      {.total_bytes = 64ull << 20, .slot_bytes = 16ull << 20, .allocator = PinnedHostAllocator()});
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_GE(PinnedHostAllocator()->pinned_count(), 1);
  auto device = CudaDevice::Create({.ordinal = 0, .copy_lanes = 4});
  ASSERT_TRUE(device.ok()) << device.status();
  constexpr uint64_t kBytes = 160ull << 20;  // 10 slots' worth through a 4-slot ring
  const std::vector<uint8_t> data = BytePattern(kBytes, 3);
  auto a = (*device)->Allocate(kBytes);
  ASSERT_TRUE(a.ok()) << a.status();
  std::vector<std::pair<loader::PinnedRing::Slot, CopyTicket>> in_flight;
  for (uint64_t off = 0; off < kBytes;) {
    auto slot = (*ring)->TryAcquire();
    if (!slot) {  // ring full: retire the oldest copy and recycle its slot
      ASSERT_TRUE((*device)->Wait(in_flight.front().second).ok());
      (*ring)->Release(in_flight.front().first);
      in_flight.erase(in_flight.begin());
      continue;
    }
    const uint64_t n = std::min<uint64_t>(slot->size, kBytes - off);
    std::memcpy(slot->data, data.data() + off, n);
    auto t = (*device)->CopyToDeviceAsync(*a, off, slot->data, n);
    ASSERT_TRUE(t.ok()) << t.status();
    in_flight.push_back({*slot, *t});
    off += n;
  }
  for (auto& [slot, ticket] : in_flight) {
    ASSERT_TRUE((*device)->Wait(ticket).ok());
    (*ring)->Release(slot);
  }
  std::vector<uint8_t> back(kBytes);
  ASSERT_TRUE((*device)->CopyToHost(back.data(), *a, 0, kBytes).ok());
  EXPECT_TRUE(back == data);
  EXPECT_TRUE((*device)->Free(*a).ok());
}

// Child half of ExportIsOpenedByASecondProcess: runs only when the parent re-executes
// this binary with LOADSTAR_IPC_HANDLE set (hex of the 64-byte handle).
TEST(CudaDeviceIpcChild, OpensTheExportedHandle) {
  const char* hex = std::getenv("LOADSTAR_IPC_HANDLE");
  if (hex == nullptr) GTEST_SKIP() << "the child of ExportIsOpenedByASecondProcess";
  SKIP_WITHOUT_GPU();
  const uint64_t bytes = std::strtoull(std::getenv("LOADSTAR_IPC_BYTES"), nullptr, 10);
  const char* uuid = std::getenv("LOADSTAR_IPC_UUID");
  std::string handle(std::strlen(hex) / 2, '\0');
  ASSERT_EQ(std::strlen(hex), 2 * sizeof(cudaIpcMemHandle_t));
  for (size_t i = 0; i < handle.size(); ++i) {
    handle[i] = static_cast<char>(std::stoi(std::string(hex + 2 * i, 2), nullptr, 16));
  }
  // Opened as an engine does, through the attach client (deploy/client/cuda_ipc.h), on
  // the GPU the worker named by its UUID.
  absl::StatusOr<void*> ptr =
      loadstar::client::OpenCudaIpcHandle(handle, uuid != nullptr ? uuid : "");
  ASSERT_TRUE(ptr.ok()) << ptr.status();
  std::vector<uint8_t> back(bytes);
  ASSERT_EQ(cudaMemcpy(back.data(), *ptr, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_TRUE(back == BytePattern(bytes, 9));
  EXPECT_TRUE(loadstar::client::CloseCudaIpcHandle(*ptr).ok());
  // A UUID no GPU here has is one clear error.
  absl::StatusOr<void*> wrong = loadstar::client::OpenCudaIpcHandle(handle, "GPU-nope");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kNotFound);
}

TEST(CudaDeviceTest, ExportIsOpenedByASecondProcess) {
  SKIP_WITHOUT_GPU();
  auto device = CudaDevice::Create({});
  ASSERT_TRUE(device.ok()) << device.status();
  constexpr uint64_t kBytes = (4 << 20) + 3;
  const std::vector<uint8_t> data = BytePattern(kBytes, 9);
  auto a = (*device)->Allocate(kBytes);
  ASSERT_TRUE(a.ok()) << a.status();
  auto t = (*device)->CopyToDeviceAsync(*a, 0, data.data(), kBytes);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*device)->Wait(*t).ok());
  auto handle = (*device)->Export(*a);
  ASSERT_TRUE(handle.ok()) << handle.status();
  const auto child = loadstar::testing::RunShell("LOADSTAR_IPC_HANDLE=" + Hex(handle->ipc_handle) +
                              " LOADSTAR_IPC_UUID=" + handle->device_uuid +
                              " LOADSTAR_IPC_BYTES=" + std::to_string(kBytes) +
                              " /proc/" + std::to_string(getpid()) +
                              "/exe --gtest_filter=CudaDeviceIpcChild.OpensTheExportedHandle");
  EXPECT_EQ(child.exit_code, 0) << child.output;
  EXPECT_NE(child.output.find("[  PASSED  ] 1 test"), std::string::npos) << child.output;
  EXPECT_TRUE((*device)->Free(*a).ok());
}

}  // namespace
}  // namespace loadstar::kernels
