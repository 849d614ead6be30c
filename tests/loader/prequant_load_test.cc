// Loading a stored GGUF checkpoint (loader/quantized_load.h LoadPrequantized) with each
// `quantization` choice of SPEC §6.1:
//   keep  -> the packed bytes exactly as in the GGUF file, their format in transform_info;
//   none  -> every tensor dequantized (reference math), q/k rows un-permuted as
//            transformers does, cast to torch_dtype;
//   nf4.. -> quant::PrepareTensor of that dequantized fp32 tensor, bit for bit.
// Small pipeline chunks split blocks across chunks (Q8_0 blocks are 34 bytes).
#include <cstring>
#include <map>

#include "gtest/gtest.h"
#include "loader/host_device.h"
#include "loader/quantized_load.h"
#include "nlohmann/json.hpp"
#include "quant/float16.h"
#include "quant/ggml_dequant.h"
#include "quant/prepare.h"
#include "store/gguf.h"
#include "store/gguf_model.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/gguf_builder.h"
#include "tests/util/quant_test_util.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::QuantConfigOf;

struct Source {
  std::string bytes;       // the tensor's packed bytes in the GGUF file
  store::PrequantTensor p;
};

class PrequantLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string path = ts_.dir().Join("tiny.gguf");
    std::string file = loadstar::testing::TinyLlamaGguf(5).Build();
    ASSERT_TRUE(WriteFileAtomically(Env::Default(), path, file).ok());
    ASSERT_TRUE(ts_.store().Save(path, "org/tiny").ok());
    store::GgufFile gguf = store::ParseGguf(file, path).value();
    store::GgufModel model = store::MapGgufModel(gguf).value();
    for (const store::GgufModelTensor& t : model.tensors) {
      sources_[t.hf_name] = {file.substr(gguf.data_offset + t.source->offset, t.source->size),
                             *model.info.Find(t.hf_name)};
    }
    LoadPipeline::Options options;
    options.chunk_bytes = 4096;
    options.ring_bytes = 1 << 20;
    options.threads = 2;
    pipeline_ = LoadPipeline::Create(options).value();
  }

  // The fp32 values transformers gets: gguf-py dequantize (== DequantizeGgmlRef, tested
  // against it), then LlamaTensorProcessor's reverse permutation.
  std::vector<float> Dequantized(const std::string& name) const {
    const Source& s = sources_.at(name);
    const quant::GgmlTypeInfo info = quant::GgmlInfo(s.p.ggml_type);
    std::vector<float> v(s.bytes.size() / info.block_bytes * info.block_elems);
    quant::DequantizeGgmlRef(s.p.ggml_type, reinterpret_cast<const uint8_t*>(s.bytes.data()),
                             static_cast<int64_t>(s.bytes.size() / info.block_bytes), v.data());
    if (s.p.permute_heads == 0) return v;
    // w.reshape(n_head, dim, 2, cols).swapaxes(2, 1).reshape(w.shape)
    const int64_t rows = s.p.rows(), cols = s.p.row_elems(), heads = s.p.permute_heads;
    const int64_t dim = rows / heads / 2;
    std::vector<float> out(v.size());
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t j = 0; j < 2; ++j) {
        for (int64_t i = 0; i < dim; ++i) {
          const int64_t dst = h * 2 * dim + j * dim + i, src = h * 2 * dim + i * 2 + j;
          std::memcpy(&out[dst * cols], &v[src * cols], cols * sizeof(float));
        }
      }
    }
    return out;
  }

  testing::TestStore ts_;
  std::map<std::string, Source> sources_;
  std::unique_ptr<LoadPipeline> pipeline_;
  HostDevice device_{0, 1ull << 30};
};

TEST_F(PrequantLoadTest, KeepServesThePackedBytes) {
  quant::QuantConfig keep = quant::ParseQuantizationShorthand("keep").value();
  auto loaded = LoadQuantized(*pipeline_, ts_.store(), "org/tiny", keep, {&device_}, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->model->tensors().size(), sources_.size());
  for (const LoadedTensor& t : loaded->model->tensors()) {
    EXPECT_EQ(loaded->model->ReadTensor(t).value(), sources_.at(t.name).bytes) << t.name;
    nlohmann::json info = nlohmann::json::parse(t.transform_info);
    EXPECT_EQ(info["format"], "gguf");
    EXPECT_EQ(info["ggml_type"], std::string(quant::GgmlInfo(sources_.at(t.name).p.ggml_type).name));
    EXPECT_EQ(info["shape"].get<std::vector<int64_t>>(), sources_.at(t.name).p.shape);
  }
  const LoadedTensor* q = loaded->model->Find("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(nlohmann::json::parse(q->transform_info)["permute_heads"], 4);
  EXPECT_EQ(nlohmann::json::parse(q->transform_info)["source_name"], "blk.0.attn_q.weight");
}

TEST_F(PrequantLoadTest, NoneDequantizesToTorchDtype) {
  for (DType dtype : {DType::kF16, DType::kF32, DType::kBF16}) {
    quant::QuantConfig none;
    none.torch_dtype = dtype;
    auto loaded = LoadQuantized(*pipeline_, ts_.store(), "org/tiny", none, {&device_}, {});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_EQ(loaded->model->tensors().size(), sources_.size());
    for (const LoadedTensor& t : loaded->model->tensors()) {
      const store::PrequantTensor& p = sources_.at(t.name).p;
      EXPECT_EQ(t.dtype, dtype) << t.name;
      EXPECT_EQ(t.shape, p.shape) << t.name;
      std::vector<float> want = Dequantized(t.name);
      std::string want_bytes(want.size() * DTypeSize(dtype), '\0');
      ASSERT_TRUE(quant::CastFloatTensor(DType::kF32, want.data(),
                                         static_cast<int64_t>(want.size()), dtype,
                                         want_bytes.data())
                      .ok());
      EXPECT_TRUE(loaded->model->ReadTensor(t).value() == want_bytes)
          << t.name << " as " << DTypeName(dtype);
    }
    ASSERT_TRUE(loaded->model->Free().ok());
  }
  EXPECT_EQ(device_.free_memory(), device_.total_memory());
}

TEST_F(PrequantLoadTest, BnbQuantizationOfTheDequantizedWeights) {
  for (const quant::QuantConfig& config :
       {QuantConfigOf(quant::QuantType::kNf4), QuantConfigOf(quant::QuantType::kNf4, 64, true),
        QuantConfigOf(quant::QuantType::kFp4, 128, false, DType::kBF16),
        QuantConfigOf(quant::QuantType::kInt8)}) {
    std::map<std::string, quant::NamedTensor> want;
    for (const auto& [name, s] : sources_) {
      std::vector<float> v = Dequantized(name);
      auto prepared = quant::PrepareTensor(config, name, DType::kF32, s.p.shape, v.data());
      ASSERT_TRUE(prepared.ok()) << prepared.status();
      for (quant::NamedTensor& t : prepared->tensors) want[t.name] = std::move(t);
    }
    auto loaded = LoadQuantized(*pipeline_, ts_.store(), "org/tiny", config, {&device_}, {});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_EQ(loaded->model->tensors().size(), want.size()) << config.VariantKey();
    for (const LoadedTensor& t : loaded->model->tensors()) {
      auto it = want.find(t.name);
      ASSERT_NE(it, want.end()) << t.name;
      EXPECT_EQ(t.dtype, it->second.dtype) << t.name;
      EXPECT_EQ(t.shape, it->second.shape) << t.name;
      std::string got = loaded->model->ReadTensor(t).value();
      EXPECT_TRUE(got == std::string(it->second.data.begin(), it->second.data.end()))
          << t.name << " " << config.VariantKey();
    }
    const LoadedTensor* q = loaded->model->Find("model.layers.0.self_attn.q_proj.weight");
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(nlohmann::json::parse(q->transform_info)["quant_type"],
              std::string(quant::QuantTypeName(config.type)));
    ASSERT_TRUE(loaded->model->Free().ok());
  }
}

TEST_F(PrequantLoadTest, TensorParallelNeedsKeep) {
  PlanOptions tp;
  tp.placement = Placement::kTensorParallel;
  HostDevice second(1, 1ull << 30);
  auto loaded = LoadQuantized(*pipeline_, ts_.store(), "org/tiny", quant::QuantConfig{},
                              {&device_, &second}, tp);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(loaded.status().message()).find("pre-quantized gguf"), std::string::npos);
}

}  // namespace
}  // namespace loadstar::loader
