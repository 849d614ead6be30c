// GPU quantization on the load path (issue 8 item 2): LoadQuantized onto a CUDA device
// quantizes each weight on the GPU (GpuStreamingQuantizer through the CUDA backend, the
// checkpoint's bytes streamed unit by unit) and gives, tensor for tensor, the bytes of the
// CPU path on a host device, for nf4/fp4/int8 x blocksizes 64/128/4096 x double quant.
// Skips with "no usable GPU: ..." without one (scripts/gpu-check step d runs it).
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "loader/device.h"
#include "loader/device_backends.h"
#include "loader/host_device.h"
#include "loader/quantized_load.h"
#include "tests/kernels/cuda_backend_test_util.h"
#include "tests/kernels/gpu_test_util.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/quant_test_util.h"

namespace loadstar::kernels {
namespace {

using loadstar::testing::QuantConfigOf;
using loader::testing::TestStore;
using loader::testing::TinyLlama;

class GpuQuantizedLoadTest : public ::testing::TestWithParam<quant::QuantConfig> {};

TEST_P(GpuQuantizedLoadTest, GpuStreamedBytesEqualTheCpuPath) {
  SKIP_WITHOUT_GPU();
  RegisterCudaBackendOnce();
  const quant::QuantConfig config = GetParam();
  TestStore ts;
  // hidden 192: 4096-element blocks end mid-tensor and tails are short.
  ts.Save(TinyLlama(2, 192, 320), "org/llama");
  loader::LoadPipeline::Options options;
  options.chunk_bytes = 8192;  // many chunks per tensor, most not a whole number of blocks
  options.ring_bytes = 1 << 20;
  options.threads = 2;
  auto pipeline = loader::LoadPipeline::Create(options);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();

  loader::HostDevice host(0, 1ull << 30);
  auto cpu = loader::LoadQuantized(**pipeline, ts.store(), "org/llama", config, {&host}, {},
                                   {.use_artifact = false});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ(cpu->device_quantized_tensors, 0);

  auto devices = loader::CreateDevices("cuda");
  ASSERT_TRUE(devices.ok()) << devices.status();
  loader::Device* gpu = (*devices)[0].get();
  auto streamed = loader::LoadQuantized(**pipeline, ts.store(), "org/llama", config, {gpu}, {},
                                        {.use_artifact = false});
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  // Every Linear weight of the 2 layers (6 each) was quantized on the GPU.
  EXPECT_EQ(streamed->device_quantized_tensors, 12);

  ASSERT_EQ(streamed->model->tensors().size(), cpu->model->tensors().size());
  for (size_t i = 0; i < cpu->model->tensors().size(); ++i) {
    const loader::LoadedTensor& c = cpu->model->tensors()[i];
    const loader::LoadedTensor& g = streamed->model->tensors()[i];
    ASSERT_EQ(g.name, c.name);
    EXPECT_EQ(g.dtype, c.dtype) << c.name;
    EXPECT_EQ(g.shape, c.shape) << c.name;
    auto cb = cpu->model->ReadTensor(c);
    auto gb = streamed->model->ReadTensor(g);
    ASSERT_TRUE(cb.ok()) << cb.status();
    ASSERT_TRUE(gb.ok()) << gb.status();
    EXPECT_TRUE(*cb == *gb) << c.name << " differs between the GPU and the CPU path";
  }
  ASSERT_TRUE(cpu->model->Free().ok());
  ASSERT_TRUE(streamed->model->Free().ok());
}

std::vector<quant::QuantConfig> Configs() {
  std::vector<quant::QuantConfig> configs;
  for (quant::QuantType type : {quant::QuantType::kNf4, quant::QuantType::kFp4}) {
    for (int blocksize : {64, 128, 4096}) {
      for (bool dq : {false, true}) configs.push_back(QuantConfigOf(type, blocksize, dq));
    }
  }
  configs.push_back(QuantConfigOf(quant::QuantType::kInt8));
  configs.push_back(QuantConfigOf(quant::QuantType::kInt8, 64, false, DType::kBF16));
  return configs;
}

INSTANTIATE_TEST_SUITE_P(Configs, GpuQuantizedLoadTest, ::testing::ValuesIn(Configs()),
                         [](const ::testing::TestParamInfo<quant::QuantConfig>& info) {
                           std::string key = info.param.VariantKey() + "_" +
                                             std::string(TorchDTypeName(info.param.torch_dtype));
                           for (char& c : key) {
                             if (c == '-') c = '_';
                           }
                           return key;
                         });

}  // namespace
}  // namespace loadstar::kernels
