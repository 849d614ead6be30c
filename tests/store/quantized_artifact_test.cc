// Quantized variants in the store (store/quantized_artifact.h) and the HF export
// (store/hf_export.h): bytes equal quant::PrepareTensor on each whole tensor, names and
// layout as SPEC §6, config.json's quantization_config, sharding, atomicity.
#include "store/quantized_artifact.h"

#include <fmt/format.h>

#include <atomic>
#include <map>
#include <set>

#include "base/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "quant/prepare.h"
#include "store/hf_export.h"
#include "store/quantized_save.h"
#include "store/safetensors.h"
#include "store/safetensors_writer.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/quant_test_util.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using loadstar::testing::CheckpointBuilder;
using loadstar::testing::PreparedTensors;
using loadstar::testing::QuantConfigOf;
using loadstar::testing::TempDir;

class QuantizedArtifactTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open({.root = dir_.Join("store")});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    builder_ = loadstar::testing::MixedLlama();
    ASSERT_TRUE(builder_.Write(dir_.Join("src")).ok());
    ASSERT_TRUE(store_->Save(dir_.Join("src"), "org/m").ok());
  }

  void ExpectVariantEquals(const Manifest& m, const quant::QuantConfig& config) {
    auto expected = PreparedTensors(builder_, config);
    ASSERT_EQ(m.tensors.size(), expected.size());
    for (const ManifestTensor& t : m.tensors) {
      auto it = expected.find(t.name);
      ASSERT_NE(it, expected.end()) << t.name;
      EXPECT_EQ(t.dtype, it->second.dtype) << t.name;
      EXPECT_EQ(t.shape, it->second.shape) << t.name;
      auto bytes = ReadStoredTensor(*store_, m, t);
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      EXPECT_TRUE(*bytes == std::string(it->second.data.begin(), it->second.data.end()))
          << t.name;
    }
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  CheckpointBuilder builder_;
};

TEST_F(QuantizedArtifactTest, VariantsEqualPrepareTensor) {
  for (const quant::QuantConfig& config :
       {QuantConfigOf(quant::QuantType::kNf4), QuantConfigOf(quant::QuantType::kNf4, 128, true),
        QuantConfigOf(quant::QuantType::kFp4, 32, false, DType::kBF16),
        QuantConfigOf(quant::QuantType::kFp4, 64, true, DType::kF32),
        QuantConfigOf(quant::QuantType::kInt8)}) {
    SCOPED_TRACE(config.VariantKey());
    auto m = SaveQuantizedVariant(*store_, "org/m", config);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->variant, config.VariantKey());
    EXPECT_EQ(nlohmann::json::parse(m->quantization_json), config.ToHfJson());
    auto read = store_->GetManifest("org/m", config.VariantKey());
    ASSERT_TRUE(read.ok()) << read.status();
    ExpectVariantEquals(*read, config);
    // A second save of the same key needs overwrite.
    EXPECT_EQ(SaveQuantizedVariant(*store_, "org/m", config).status().code(),
              absl::StatusCode::kAlreadyExists);
  }
  auto list = store_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].variants.size(), 5u);
  EXPECT_TRUE(store_->Verify("org/m").ok());
}

// Counts the bytes read from files whose path contains `match_`.
class ReadCountingEnv : public EnvWrapper {
 public:
  ReadCountingEnv(Env* target, std::string match) : EnvWrapper(target), match_(std::move(match)) {}
  int64_t bytes_read() const { return bytes_read_; }

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path, const OpenOptions& options) override {
    ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                     target()->NewRandomAccessFile(path, options));
    if (path.find(match_) == std::string::npos) return file;
    return std::unique_ptr<RandomAccessFile>(new Counted(std::move(file), &bytes_read_));
  }

 private:
  class Counted : public RandomAccessFile {
   public:
    Counted(std::unique_ptr<RandomAccessFile> base, std::atomic<int64_t>* count)
        : RandomAccessFile(base->path()), base_(std::move(base)), count_(count) {}
    absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* dst) const override {
      ASSIGN_OR_RETURN(size_t got, base_->Read(offset, n, dst));
      *count_ += static_cast<int64_t>(got);
      return got;
    }
    uint64_t Size() const override { return base_->Size(); }

   private:
    std::unique_ptr<RandomAccessFile> base_;
    std::atomic<int64_t>* count_;
  };

  std::string match_;
  std::atomic<int64_t> bytes_read_{0};
};

// Double quant: the quant_state's length (it prints the nested offset) is taken when the
// writer reaches it, so each weight is read and quantized once (it used to be twice: a
// sizing pass first), and the bytes are still PrepareTensor's (the loader's streaming
// quantizer is tested bit-equal to that in tests/loader).
TEST_F(QuantizedArtifactTest, DoubleQuantVariantQuantizesEachWeightOnce) {
  ReadCountingEnv env(Env::Default(), "/org/m/data-");
  auto counted = Store::Open({.root = dir_.Join("store"), .env = &env});
  ASSERT_TRUE(counted.ok()) << counted.status();
  auto manifest = (*counted)->GetManifest("org/m");
  ASSERT_TRUE(manifest.ok());
  // One read of every tensor, in whole 4 KiB blocks (O_DIRECT) up to the file's end.
  int64_t once = 0;
  for (const ManifestTensor& t : manifest->tensors) {
    const uint64_t end = Env::Default()
                             ->GetFileSize(store_->DataFilePath(*manifest, t.file).value())
                             .value();
    const uint64_t blocks = (t.size + kDirectIoAlignment - 1) / kDirectIoAlignment;
    once += static_cast<int64_t>(std::min(blocks * kDirectIoAlignment, end - t.offset));
  }
  ASSERT_LT(once, 2 * static_cast<int64_t>(manifest->TotalBytes()));
  for (const quant::QuantConfig& config :
       {QuantConfigOf(quant::QuantType::kNf4, 64, true),
        QuantConfigOf(quant::QuantType::kFp4, 128, true, DType::kBF16)}) {
    SCOPED_TRACE(config.VariantKey());
    const int64_t before = env.bytes_read();
    QuantizedInputsStats stats;
    auto m = SaveQuantizedVariant(**counted, "org/m", config, {}, false, &stats);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(stats.sizing_quantizations, 0);
    EXPECT_EQ(stats.fill_quantizations(), static_cast<int64_t>(manifest->tensors.size()));
    EXPECT_EQ(env.bytes_read() - before, once);
    auto read = store_->GetManifest("org/m", config.VariantKey());
    ASSERT_TRUE(read.ok()) << read.status();
    ExpectVariantEquals(*read, config);
  }
  // The up-front sizing (what the safetensors export needs) still quantizes twice.
  QuantizedInputsStats stats;
  auto inputs = QuantizedInputs(*store_, *manifest, QuantConfigOf(quant::QuantType::kNf4, 64, true),
                                "", StateSizing::kUpFront, &stats);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  EXPECT_GT(stats.sizing_quantizations, 0);
  for (const TensorInput& in : *inputs) EXPECT_FALSE(in.shape_at_write) << in.spec.name;
}

// The one-pass save (store/quantized_save.h) quantizes each weight once, from the source
// bytes the copy reads once, and reads nothing back from the store; its variants hold
// PrepareTensor's bytes.
TEST_F(QuantizedArtifactTest, OnePassSaveQuantizesEachWeightOnceAndReadsNothingBack) {
  ReadCountingEnv from_store(Env::Default(), "/one-pass/");
  ReadCountingEnv from_source(&from_store, "/src/model.safetensors");
  auto counted = Store::Open({.root = dir_.Join("one-pass"), .env = &from_source});
  ASSERT_TRUE(counted.ok()) << counted.status();
  const std::vector<quant::QuantConfig> configs = {
      QuantConfigOf(quant::QuantType::kNf4, 64, true),
      QuantConfigOf(quant::QuantType::kFp4, 128, true, DType::kBF16),
      QuantConfigOf(quant::QuantType::kInt8)};
  std::vector<QuantizedInputsStats> stats;
  auto saved = SaveQuantized(**counted, dir_.Join("src"), "org/m", configs, {}, {}, &stats);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(from_store.bytes_read(), 0);
  // The source file once: its header when opened, then every tensor's bytes by the copy.
  const int64_t source_bytes = static_cast<int64_t>(
      Env::Default()->GetFileSize(dir_.Join("src/model.safetensors")).value());
  EXPECT_LE(from_source.bytes_read(), source_bytes);
  EXPECT_GE(from_source.bytes_read(), static_cast<int64_t>(saved->model.TotalBytes()));
  ASSERT_EQ(stats.size(), configs.size());
  for (size_t i = 0; i < configs.size(); ++i) {
    SCOPED_TRACE(configs[i].VariantKey());
    EXPECT_EQ(stats[i].sizing_quantizations, 0);
    EXPECT_EQ(stats[i].fill_quantizations(), static_cast<int64_t>(saved->model.tensors.size()));
    // Read back here only to compare (through store_, not the counted Env).
    store_ = Store::Open({.root = dir_.Join("one-pass")}).value();
    auto read = store_->GetManifest("org/m", configs[i].VariantKey());
    ASSERT_TRUE(read.ok()) << read.status();
    ExpectVariantEquals(*read, configs[i]);
  }
}

// A writer that needs every size first refuses a tensor sized at write time.
TEST_F(QuantizedArtifactTest, SafetensorsRefusesSizesKnownOnlyAtWrite) {
  auto manifest = store_->GetManifest("org/m");
  ASSERT_TRUE(manifest.ok());
  auto inputs = QuantizedInputs(*store_, *manifest, QuantConfigOf(quant::QuantType::kNf4, 64, true),
                                "", StateSizing::kAtWrite);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  auto bytes = SerializeSafetensors(*std::move(inputs));
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bytes.status().message()),
              ::testing::HasSubstr("its size is known only while writing"));
}

TEST_F(QuantizedArtifactTest, NoneAndUnknownModelAreErrors) {
  EXPECT_EQ(SaveQuantizedVariant(*store_, "org/m", QuantConfigOf(quant::QuantType::kNone))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SaveQuantizedVariant(*store_, "org/nope", QuantConfigOf(quant::QuantType::kNf4))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(QuantizedArtifactTest, PlannedSpecsMatchQuantizedOutputs) {
  auto m = store_->GetManifest("org/m");
  ASSERT_TRUE(m.ok());
  for (const quant::QuantConfig& config :
       {QuantConfigOf(quant::QuantType::kNf4, 4096), QuantConfigOf(quant::QuantType::kInt8)}) {
    for (const ManifestTensor& t : m->tensors) {
      auto p = PrepareStoredTensor(*store_, *m, t, config, "");
      ASSERT_TRUE(p.ok()) << p.status();
      auto specs = QuantizedTensorSpecs(config, "", t,
                                        QuantStateJsonBytes(config, t.shape));
      ASSERT_EQ(specs.size(), p->tensors.size()) << t.name;
      for (size_t i = 0; i < specs.size(); ++i) {
        EXPECT_EQ(specs[i].name, p->tensors[i].name);
        EXPECT_EQ(specs[i].dtype, p->tensors[i].dtype) << specs[i].name;
        EXPECT_EQ(specs[i].shape, p->tensors[i].shape) << specs[i].name;
      }
    }
  }
}

// Reads every tensor of an exported directory: name -> (tensor, bytes).
std::map<std::string, std::pair<SafetensorsTensor, std::string>> ReadExport(
    const std::string& dir, const std::vector<std::string>& files) {
  std::map<std::string, std::pair<SafetensorsTensor, std::string>> out;
  for (const std::string& f : files) {
    if (!f.ends_with(".safetensors")) continue;
    auto st = ReadSafetensors(Env::Default(), dir + "/" + f);
    EXPECT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->metadata.at("format"), "pt");
    auto text = ReadFileToString(Env::Default(), dir + "/" + f, 1ull << 30);
    for (const SafetensorsTensor& t : st->tensors) {
      out[t.name] = {t, text->substr(st->data_offset + t.begin, t.size())};
    }
  }
  return out;
}

TEST_F(QuantizedArtifactTest, ExportLayoutFromCheckpointAndFromArtifact) {
  const quant::QuantConfig config = QuantConfigOf(quant::QuantType::kNf4, 64, true);
  auto expected = PreparedTensors(builder_, config);
  auto fresh = ExportQuantized(*store_, "org/m", config, dir_.Join("out-ckpt"));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->source, "checkpoint");
  ASSERT_TRUE(SaveQuantizedVariant(*store_, "org/m", config).ok());
  auto reused = ExportQuantized(*store_, "org/m", config, dir_.Join("out-art"));
  ASSERT_TRUE(reused.ok()) << reused.status();
  EXPECT_EQ(reused->source, "artifact");
  for (const auto& [dir, result] : {std::pair{dir_.Join("out-ckpt"), *fresh},
                                    std::pair{dir_.Join("out-art"), *reused}}) {
    SCOPED_TRACE(dir);
    EXPECT_EQ(result.files, (std::vector<std::string>{"model.safetensors", "config.json",
                                                      "generation_config.json"}));
    auto tensors = ReadExport(dir, result.files);
    ASSERT_EQ(tensors.size(), expected.size());
    for (const auto& [name, e] : expected) {
      ASSERT_TRUE(tensors.count(name)) << name;
      EXPECT_EQ(tensors[name].first.dtype, e.dtype) << name;
      EXPECT_EQ(tensors[name].first.shape, e.shape) << name;
      EXPECT_TRUE(tensors[name].second == std::string(e.data.begin(), e.data.end())) << name;
    }
    // SPEC §6 key layout of one 4-bit weight.
    const std::string w = "model.layers.0.self_attn.q_proj.weight";
    for (const char* suffix : {"", ".absmax", ".quant_map", ".nested_absmax",
                               ".nested_quant_map", ".quant_state.bitsandbytes__nf4"}) {
      EXPECT_TRUE(tensors.count(w + suffix)) << w << suffix;
    }
    EXPECT_EQ(tensors[w].first.shape, (std::vector<int64_t>{64 * 64 / 2, 1}));
    nlohmann::json state =
        nlohmann::json::parse(tensors[w + ".quant_state.bitsandbytes__nf4"].second);
    EXPECT_EQ(state["quant_type"], "nf4");
    EXPECT_EQ(state["blocksize"], 64);
    EXPECT_EQ(state["dtype"], "float16");
    EXPECT_EQ(state["shape"], nlohmann::json({64, 64}));
    EXPECT_EQ(state["nested_blocksize"], 256);
    EXPECT_TRUE(state.contains("nested_offset"));
    // lm_head and norms are not quantized; fp32/bf16 tensors are cast to float16.
    EXPECT_EQ(tensors["lm_head.weight"].first.dtype, DType::kF16);
    EXPECT_EQ(tensors["model.norm.weight"].first.dtype, DType::kF16);
    auto cfg_text = ReadFileToString(Env::Default(), dir + "/config.json", 1 << 20);
    nlohmann::json cfg = nlohmann::json::parse(*cfg_text);
    EXPECT_EQ(cfg["quantization_config"], config.ToHfJson());
    EXPECT_EQ(cfg["quantization_config"]["quant_method"], "bitsandbytes");
    EXPECT_EQ(cfg["quantization_config"]["load_in_4bit"], true);
    EXPECT_EQ(cfg["quantization_config"]["bnb_4bit_quant_type"], "nf4");
    EXPECT_EQ(cfg["quantization_config"]["bnb_4bit_use_double_quant"], true);
    EXPECT_EQ(cfg["model_type"], "test");  // the original config is kept
    EXPECT_EQ(*ReadFileToString(Env::Default(), dir + "/generation_config.json", 1 << 20),
              "{\"do_sample\": false}\n");
  }
  // No temp directories are left beside the outputs.
  auto children = Env::Default()->GetChildren(dir_.path());
  ASSERT_TRUE(children.ok());
  for (const std::string& c : *children) EXPECT_EQ(c.find(".tmp-"), std::string::npos) << c;
  // An existing output is not replaced without overwrite.
  EXPECT_EQ(ExportQuantized(*store_, "org/m", config, dir_.Join("out-art")).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(ExportQuantized(*store_, "org/m", config, dir_.Join("out-art"), {},
                              {.overwrite = true})
                  .ok());
}

TEST_F(QuantizedArtifactTest, ShardedInt8Export) {
  const quant::QuantConfig config = QuantConfigOf(quant::QuantType::kInt8);
  auto expected = PreparedTensors(builder_, config);
  auto r = ExportQuantized(*store_, "org/m", config, dir_.Join("out"), {},
                           {.max_shard_bytes = 20000});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_GT(r->files.size(), 3u);
  EXPECT_EQ(r->files[0], "model-00001-of-" + fmt::format("{:05d}", r->files.size() - 3) +
                             ".safetensors");
  auto index_text =
      ReadFileToString(Env::Default(), dir_.Join("out/model.safetensors.index.json"), 1 << 20);
  ASSERT_TRUE(index_text.ok());
  nlohmann::json index = nlohmann::json::parse(*index_text);
  EXPECT_EQ(index["metadata"]["total_size"], r->tensor_bytes);
  auto tensors = ReadExport(dir_.Join("out"), r->files);
  ASSERT_EQ(tensors.size(), expected.size());
  for (const auto& [name, e] : expected) {
    ASSERT_TRUE(index["weight_map"].contains(name)) << name;
    EXPECT_TRUE(tensors[name].second == std::string(e.data.begin(), e.data.end())) << name;
  }
  const std::string m = "model.layers.1.mlp.down_proj";
  EXPECT_EQ(tensors[m + ".weight"].first.dtype, DType::kI8);
  EXPECT_EQ(tensors[m + ".weight"].first.shape, (std::vector<int64_t>{64, 130}));
  EXPECT_EQ(tensors[m + ".SCB"].first.dtype, DType::kF32);
  EXPECT_EQ(tensors[m + ".SCB"].first.shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(tensors[m + ".weight_format"].first.shape, (std::vector<int64_t>{}));
}

TEST_F(QuantizedArtifactTest, ExportErrors) {
  EXPECT_EQ(
      ExportQuantized(*store_, "org/m", QuantConfigOf(quant::QuantType::kNone), dir_.Join("o"))
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExportQuantized(*store_, "org/x", QuantConfigOf(quant::QuantType::kNf4), dir_.Join("o"))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(Env::Default()->FileExists(dir_.Join("o")));
}

}  // namespace
}  // namespace loadstar::store
