// The GPU ggml dequantization kernel (kernels/ggml_dequant_kernels.h) gives the CPU
// reference's bits (quant/ggml_dequant.h, itself bit-exact with gguf-py) for every block
// type. Skipped without a usable GPU.
#include "kernels/ggml_dequant_kernels.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "quant/ggml_dequant.h"
#include "tests/kernels/gpu_test_util.h"
#include "tests/util/gguf_builder.h"

namespace loadstar::kernels {
namespace {

using quant::GgmlType;

TEST(GgmlDequantGpuTest, EqualsCpuReferenceForEveryType) {
  SKIP_WITHOUT_GPU();
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0,
                        GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1,
                        GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                        GgmlType::kQ6_K}) {
    const quant::GgmlTypeInfo info = quant::GgmlInfo(type);
    const int64_t blocks = 1000 + 7;
    std::string in = loadstar::testing::RandomGgmlBlocks(type, blocks, 11);
    std::vector<float> want(blocks * info.block_elems), got(want.size());
    quant::DequantizeGgmlRef(type, reinterpret_cast<const uint8_t*>(in.data()), blocks,
                             want.data());
    void* in_mem = nullptr;
    void* out_mem = nullptr;
    ASSERT_EQ(cudaMalloc(&in_mem, in.size()), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&out_mem, got.size() * 4), cudaSuccess);
    auto* d_in = static_cast<uint8_t*>(in_mem);
    auto* d_out = static_cast<float*>(out_mem);
    ASSERT_EQ(cudaMemcpy(d_in, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(LaunchDequantizeGgml(type, d_in, blocks, d_out, nullptr), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(got.data(), d_out, got.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    cudaFree(d_in);
    cudaFree(d_out);
    EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * 4), 0) << info.name;
  }
}

}  // namespace
}  // namespace loadstar::kernels
