// The device backend registry (loader/device_backends.h) and what the loader asks of a
// backend: devices, communicators, staging memory and, in QuantizeTransform, a quantizer
// on the destination device. A fake accelerator backend (host memory presented as a CUDA
// device, quantizing through a counting wrapper of the CPU quantizer) drives the device
// path here; tests/kernels/gpu_quantized_load_test.cc drives the real one on a GPU.
#include "loader/device_backends.h"

#include <atomic>
#include <fstream>
#include <map>
#include <sstream>

#include "gtest/gtest.h"
#include "loader/communicator.h"
#include "loader/device.h"
#include "loader/host_device.h"
#include "loader/quantized_load.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/quant_test_util.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::QuantConfigOf;
using testing::TestStore;
using testing::TinyLlama;

// Host memory that says it is a CUDA device, so the loader treats it as an accelerator's.
class FakeAcceleratorDevice final : public Device {
 public:
  explicit FakeAcceleratorDevice(uint64_t bytes) : memory_(0, bytes) {}
  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string name() const override { return "fake:0"; }
  uint64_t total_memory() const override { return memory_.total_memory(); }
  uint64_t free_memory() const override { return memory_.free_memory(); }
  absl::StatusOr<Allocation> Allocate(uint64_t bytes) override { return memory_.Allocate(bytes); }
  absl::Status Free(const Allocation& a) override { return memory_.Free(a); }
  absl::StatusOr<CopyTicket> CopyToDeviceAsync(const Allocation& dst, uint64_t offset,
                                               const void* src, uint64_t bytes) override {
    return memory_.CopyToDeviceAsync(dst, offset, src, bytes);
  }
  absl::Status Wait(CopyTicket t) override { return memory_.Wait(t); }
  absl::Status CopyToHost(void* dst, const Allocation& src, uint64_t offset,
                          uint64_t bytes) override {
    return memory_.CopyToHost(dst, src, offset, bytes);
  }
  absl::StatusOr<ExportedHandle> Export(const Allocation& a) override { return memory_.Export(a); }

 private:
  HostDevice memory_;
};

// The CPU quantizer, counting what reaches it through the backend.
class CountingQuantizer final : public quant::TensorQuantizer {
 public:
  CountingQuantizer(std::unique_ptr<quant::StreamingQuantizer> inner,
                    std::atomic<uint64_t>* bytes)
      : inner_(std::move(inner)), bytes_(bytes) {}
  absl::Status Append(const void* data, size_t size) override {
    *bytes_ += size;
    return inner_->Append(data, size);
  }
  int64_t bytes_expected() const override { return inner_->bytes_expected(); }
  int64_t bytes_consumed() const override { return inner_->bytes_consumed(); }
  absl::StatusOr<quant::Quantized4bit> Finish4bit() override { return inner_->Finish4bit(); }
  absl::StatusOr<quant::QuantizedInt8> FinishInt8() override { return inner_->FinishInt8(); }

 private:
  std::unique_ptr<quant::StreamingQuantizer> inner_;
  std::atomic<uint64_t>* bytes_;  // shared by the pipeline's threads
};

class FakeAcceleratorBackend final : public DeviceBackend {
 public:
  std::string name() const override { return "fake-accelerator"; }
  DeviceKind kind() const override { return DeviceKind::kCuda; }
  absl::Status Usable() override { return absl::OkStatus(); }
  absl::StatusOr<std::vector<std::unique_ptr<Device>>> CreateDevices() override {
    std::vector<std::unique_ptr<Device>> devices;
    devices.push_back(std::make_unique<FakeAcceleratorDevice>(1ull << 30));
    return devices;
  }
  absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
      const std::vector<Device*>& devices) override {
    ++communicators;
    return absl::UnimplementedError("fake backend has no communicator");
  }
  HostMemoryAllocator* staging_allocator() override { return &staging; }
  absl::StatusOr<std::unique_ptr<quant::TensorQuantizer>> CreateQuantizer(
      Device& device, const quant::StreamingQuantizer::Options& options) override {
    if (device.name() != "fake:0") return absl::InvalidArgumentError("not my device");
    ++quantizers;
    auto inner = quant::StreamingQuantizer::Create(options);
    if (!inner.ok()) return inner.status();
    return std::unique_ptr<quant::TensorQuantizer>(
        new CountingQuantizer(*std::move(inner), &quantized_bytes));
  }

  struct Staging final : HostMemoryAllocator {
    void* Allocate(uint64_t bytes, uint64_t alignment) override {
      return DefaultHostAllocator()->Allocate(bytes, alignment);
    }
    void Free(void* p) override { DefaultHostAllocator()->Free(p); }
  } staging;
  // Atomic: the pipeline's threads create and feed quantizers concurrently (DeviceBackend
  // rule 1, every method thread-safe).
  std::atomic<int> quantizers{0};
  std::atomic<int> communicators{0};
  std::atomic<uint64_t> quantized_bytes{0};
};

// Registered once per process (a registry never forgets); nullptr, with the reason logged
// by the caller, when a real CUDA backend was loaded first in this process.
FakeAcceleratorBackend* Fake() {
  static FakeAcceleratorBackend* fake = [] {
    auto* b = new FakeAcceleratorBackend;
    return RegisterDeviceBackend(b).ok() ? b : nullptr;
  }();
  return fake;
}

TEST(DeviceBackendsTest, RegistryFindsBackendsByNameAndKind) {
  FakeAcceleratorBackend* fake = Fake();
  if (fake == nullptr) GTEST_SKIP() << "a CUDA backend is registered in this process already";
  auto found = GetDeviceBackend("fake-accelerator");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, fake);
  EXPECT_EQ(GetDeviceBackend("tpu").status().code(), absl::StatusCode::kNotFound);
  // One backend per name and per kind.
  FakeAcceleratorBackend twin;
  EXPECT_EQ(RegisterDeviceBackend(&twin).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(RegisterDeviceBackend(nullptr).code(), absl::StatusCode::kInvalidArgument);

  FakeAcceleratorDevice accel(1 << 20);
  HostDevice host(0, 1 << 20);
  EXPECT_EQ(BackendOf(accel), fake);
  EXPECT_EQ(BackendOf(host), nullptr);
  EXPECT_EQ(StagingAllocatorFor({&accel}), &fake->staging);
  EXPECT_EQ(StagingAllocatorFor({&host}), DefaultHostAllocator());
  EXPECT_EQ(StagingAllocatorFor({}), DefaultHostAllocator());
  // CreateCommunicator hands accelerator devices to their backend.
  EXPECT_EQ(CreateCommunicator({&accel}).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(fake->communicators, 1);
}

class DeviceQuantizeTest : public ::testing::TestWithParam<quant::QuantConfig> {};

// Quantize while streaming asks the destination device's backend for the quantizer; host
// devices keep the CPU path. Same bytes, tensor for tensor.
TEST_P(DeviceQuantizeTest, AcceleratorDevicesQuantizeThroughTheirBackend) {
  FakeAcceleratorBackend* fake = Fake();
  if (fake == nullptr) GTEST_SKIP() << "a CUDA backend is registered in this process already";
  const quant::QuantConfig config = GetParam();
  TestStore ts;
  ts.Save(TinyLlama(2, 128, 200), "org/llama");
  LoadPipeline::Options options;
  options.chunk_bytes = 8192;  // many chunks per tensor
  options.ring_bytes = 1 << 20;
  options.threads = 2;
  auto pipeline = LoadPipeline::Create(options);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();

  HostDevice host(0, 1ull << 30);
  auto on_host = LoadQuantized(**pipeline, ts.store(), "org/llama", config, {&host}, {});
  ASSERT_TRUE(on_host.ok()) << on_host.status();
  EXPECT_EQ(on_host->device_quantized_tensors, 0);

  const int quantizers_before = fake->quantizers;
  const uint64_t bytes_before = fake->quantized_bytes;
  FakeAcceleratorDevice accel(1ull << 30);
  auto on_accel = LoadQuantized(**pipeline, ts.store(), "org/llama", config, {&accel}, {});
  ASSERT_TRUE(on_accel.ok()) << on_accel.status();
  // 2 layers x 6 Linear weights (lm_head is skipped by default).
  EXPECT_EQ(on_accel->device_quantized_tensors, 12);
  EXPECT_EQ(fake->quantizers - quantizers_before, 12);
  // Every byte of every quantized weight went through the backend's quantizer.
  const uint64_t weights = 2 * (4 * 128 * 128 * 2 + 2 * 256 * 128 * 2);
  EXPECT_EQ(fake->quantized_bytes - bytes_before, weights);

  ASSERT_EQ(on_accel->model->tensors().size(), on_host->model->tensors().size());
  for (size_t i = 0; i < on_host->model->tensors().size(); ++i) {
    const LoadedTensor& h = on_host->model->tensors()[i];
    const LoadedTensor& a = on_accel->model->tensors()[i];
    ASSERT_EQ(a.name, h.name);
    EXPECT_EQ(a.dtype, h.dtype) << h.name;
    EXPECT_EQ(a.shape, h.shape) << h.name;
    auto hb = on_host->model->ReadTensor(h);
    auto ab = on_accel->model->ReadTensor(a);
    ASSERT_TRUE(hb.ok() && ab.ok()) << h.name;
    EXPECT_TRUE(*hb == *ab) << h.name;
  }
  ASSERT_TRUE(on_host->model->Free().ok());
  ASSERT_TRUE(on_accel->model->Free().ok());
}

INSTANTIATE_TEST_SUITE_P(Configs, DeviceQuantizeTest,
                         ::testing::Values(QuantConfigOf(quant::QuantType::kNf4),
                                           QuantConfigOf(quant::QuantType::kFp4, 128, true),
                                           QuantConfigOf(quant::QuantType::kInt8)),
                         [](const ::testing::TestParamInfo<quant::QuantConfig>& info) {
                           std::string key = info.param.VariantKey();
                           for (char& c : key) {
                             if (c == '-') c = '_';
                           }
                           return key;
                         });

// Built with CUDA, the CUDA module is loaded by the first request for CUDA devices, and
// only then (the start-up half is tests/deploy/cli_startup_test.cc).
TEST(CudaModuleTest, CudaDevicesLoadTheModule) {
#ifndef LOADSTAR_HAVE_CUDA_MODULE
  GTEST_SKIP() << "built without CUDA: there is no CUDA module to load";
#else
  auto maps = [] {
    std::ifstream in("/proc/self/maps");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  if (!CudaModuleLoaded()) {
    EXPECT_EQ(maps().find("libloadstar_cuda.so"), std::string::npos);
    EXPECT_EQ(maps().find("libcudart"), std::string::npos);
  }
  auto devices = CreateDevices("cuda");
  if (!devices.ok()) {
    // No GPU here: the module loaded and said why.
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(std::string(devices.status().message()).find("no usable GPU"), std::string::npos)
        << devices.status();
  }
  EXPECT_TRUE(CudaModuleLoaded());
  const std::string after = maps();
  EXPECT_NE(after.find("libloadstar_cuda.so"), std::string::npos);
  EXPECT_NE(after.find("libcudart"), std::string::npos);
  EXPECT_EQ(after.find("libcublas"), std::string::npos) << "the backend never calls cuBLAS";
#endif
}

}  // namespace
}  // namespace loadstar::loader
