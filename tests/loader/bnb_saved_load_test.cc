// Saved bitsandbytes checkpoints (store/bnb_checkpoint.h): a directory in the HF bnb
// layout (here written by `store export`, as transformers writes them) is stored as is and
// served as stored: loading it with its own quantization (or keep, or none named) gives
// exactly the tensors of a quantize-while-loading of the original model under that
// quantization; none dequantizes each weight as bitsandbytes does, any other quantization
// equals quantizing that dequantized model; malformed directories name the tensor.
#include <cstring>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loader/host_device.h"
#include "loader/quantized_load.h"
#include "quant/quant_state.h"
#include "store/hf_export.h"
#include "store/safetensors.h"
#include "store/safetensors_writer.h"
#include "store/prequant_info.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/quant_test_util.h"

namespace loadstar::loader {
namespace {

using ::testing::HasSubstr;
using loadstar::testing::QuantConfigOf;

std::map<std::string, std::string> TensorBytes(const LoadedModel& m) {
  std::map<std::string, std::string> out;
  for (const LoadedTensor& t : m.tensors()) out[t.name] = m.ReadTensor(t).value();
  return out;
}

class BnbSavedLoadTest : public ::testing::TestWithParam<quant::QuantConfig> {};

TEST_P(BnbSavedLoadTest, ServedAsStored) {
  const quant::QuantConfig config = GetParam();
  testing::TestStore ts;
  ts.Save(testing::TinyLlama(2, 128, 200), "orig");
  const std::string dir = ts.dir().Join("bnb");
  ASSERT_TRUE(store::ExportQuantized(ts.store(), "orig", config, dir).ok());
  absl::StatusOr<store::Manifest> saved = ts.store().Save(dir, "saved");
  ASSERT_TRUE(saved.ok()) << saved.status();
  auto info = store::ReadPrequantInfo(ts.store(), "saved").value();
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->format, "bitsandbytes");

  LoadPipeline::Options options;
  options.chunk_bytes = 8192;
  options.threads = 2;
  auto pipeline = LoadPipeline::Create(options).value();
  HostDevice device(0, 1ull << 30);
  auto want = LoadQuantized(*pipeline, ts.store(), "orig", config, {&device}, {});
  ASSERT_TRUE(want.ok()) << want.status();
  const auto want_bytes = TensorBytes(*want->model);

  quant::QuantConfig unspecified;
  unspecified.unspecified = true;
  for (const quant::QuantConfig& ask :
       {config, quant::ParseQuantizationShorthand("keep").value(), unspecified}) {
    auto got = LoadQuantized(*pipeline, ts.store(), "saved", ask, {&device}, {});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(TensorBytes(*got->model) == want_bytes) << ask.VariantKey();
    // The quant state reaches the tensor table as for any quantized load.
    const LoadedTensor* w = got->model->Find("model.layers.0.self_attn.q_proj.weight");
    ASSERT_NE(w, nullptr);
    EXPECT_THAT(w->transform_info, HasSubstr(std::string(quant::QuantTypeName(config.type))));
    ASSERT_TRUE(got->model->Free().ok());
  }
  // quantization none: the HF state dict of the unquantized model, each weight as
  // bitsandbytes dequantizes it (Dequantize4bit / DequantizeInt8 of the stored state, cast
  // to torch_dtype), every other tensor as stored.
  const quant::QuantConfig none = QuantConfigOf(quant::QuantType::kNone);
  auto deq = LoadQuantized(*pipeline, ts.store(), "saved", none, {&device}, {});
  ASSERT_TRUE(deq.ok()) << deq.status();
  std::map<std::string, quant::NamedTensor> stored_named;
  for (const LoadedTensor& t : want->model->tensors()) {
    const std::string& b = want_bytes.at(t.name);
    stored_named[t.name] =
        quant::NamedTensor{t.name, t.dtype, t.shape, std::vector<uint8_t>(b.begin(), b.end())};
  }
  auto lookup = [&](std::string_view n) -> const quant::NamedTensor* {
    auto it = stored_named.find(std::string(n));
    return it == stored_named.end() ? nullptr : &it->second;
  };
  loadstar::testing::CheckpointBuilder dequantized;
  int weights = 0;
  for (const LoadedTensor& t : deq->model->tensors()) {
    EXPECT_FALSE(quant::IsQuantStateTensorName(t.name)) << t.name;
    const std::string got = deq->model->ReadTensor(t).value();
    dequantized.AddBytes(t.name, t.dtype, t.shape, got);
    EXPECT_EQ(t.dtype, DType::kF16) << t.name;
    const LoadedTensor* stored = want->model->Find(t.name);
    ASSERT_NE(stored, nullptr) << t.name;
    if (stored->dtype == DType::kF16) {
      EXPECT_TRUE(got == want_bytes.at(t.name)) << t.name;
      continue;
    }
    ++weights;
    std::vector<uint16_t> expect(got.size() / 2);
    if (config.type == quant::QuantType::kInt8) {
      auto q = quant::ParseInt8(t.name, lookup);
      ASSERT_TRUE(q.ok()) << q.status();
      std::vector<float> f(expect.size());
      ASSERT_TRUE(quant::DequantizeInt8(*q, DType::kF32, f.data()).ok());
      ASSERT_TRUE(quant::CastFloatTensor(DType::kF32, f.data(), f.size(), DType::kF16,
                                         expect.data()).ok());
    } else {
      auto q = quant::Parse4bit(t.name, lookup);
      ASSERT_TRUE(q.ok()) << q.status();
      EXPECT_EQ(q->shape, t.shape);
      ASSERT_TRUE(quant::Dequantize4bitRef(*q, DType::kF16, expect.data()).ok());
    }
    EXPECT_EQ(std::memcmp(expect.data(), got.data(), got.size()), 0) << t.name;
  }
  EXPECT_EQ(weights, 2 * 6) << "every Linear (q, k, v, o, up, down) of both layers";

  // Another quantization: exactly what quantizing the dequantized model while loading
  // gives.
  const std::string deq_dir = ts.dir().Join("dequantized");
  ASSERT_TRUE(dequantized.Write(deq_dir).ok());
  ASSERT_TRUE(ts.store().Save(deq_dir, "dequantized").ok());
  quant::QuantConfig other = QuantConfigOf(config.type == quant::QuantType::kInt8
                                               ? quant::QuantType::kNf4
                                               : quant::QuantType::kInt8);
  auto requantized = LoadQuantized(*pipeline, ts.store(), "saved", other, {&device}, {});
  ASSERT_TRUE(requantized.ok()) << requantized.status();
  auto reference = LoadQuantized(*pipeline, ts.store(), "dequantized", other, {&device}, {});
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_TRUE(TensorBytes(*requantized->model) == TensorBytes(*reference->model));
  const LoadedTensor* w = requantized->model->Find("model.layers.1.mlp.down_proj.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_THAT(w->transform_info, HasSubstr(std::string(quant::QuantTypeName(other.type))));
  for (auto* m : {&*deq, &*requantized, &*reference}) ASSERT_TRUE(m->model->Free().ok());
  ASSERT_TRUE(want->model->Free().ok());
}

INSTANTIATE_TEST_SUITE_P(Configs, BnbSavedLoadTest,
                         ::testing::Values(QuantConfigOf(quant::QuantType::kNf4),
                                           QuantConfigOf(quant::QuantType::kNf4, 64, true),
                                           QuantConfigOf(quant::QuantType::kFp4, 128),
                                           QuantConfigOf(quant::QuantType::kInt8)),
                         [](const ::testing::TestParamInfo<quant::QuantConfig>& info) {
                           std::string key = info.param.VariantKey();
                           for (char& c : key) c = std::isalnum(c) ? c : '_';
                           return key;
                         });

TEST(BnbSavedErrorsTest, MissingStateNamesTheTensor) {
  testing::TestStore ts;
  ts.Save(testing::TinyLlama(1, 64, 100), "orig");
  const std::string dir = ts.dir().Join("bnb");
  ASSERT_TRUE(
      store::ExportQuantized(ts.store(), "orig", QuantConfigOf(quant::QuantType::kNf4), dir).ok());
  // Drop one absmax by rewriting the safetensors without it.
  auto file = store::ReadSafetensors(Env::Default(), dir + "/model.safetensors").value();
  std::string bytes = ReadFileToString(Env::Default(), dir + "/model.safetensors").value();
  std::vector<store::TensorInput> inputs;
  for (const store::SafetensorsTensor& t : file.tensors) {
    if (t.name == "model.layers.0.mlp.up_proj.weight.absmax") continue;
    inputs.push_back(store::TensorInput::FromBytes(
        {t.name, t.dtype, t.shape}, bytes.substr(file.data_offset + t.begin, t.size())));
  }
  ASSERT_TRUE(store::WriteSafetensors(Env::Default(), dir + "/model.safetensors",
                                      std::move(inputs)).ok());
  absl::Status s = ts.store().Save(dir, "bad").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("its model.layers.0.mlp.up_proj.weight.absmax is missing"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors"));
}

}  // namespace
}  // namespace loadstar::loader
