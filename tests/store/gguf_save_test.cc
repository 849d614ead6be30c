// `store save model.gguf` (Store::Save on a GGUF file, store/gguf_model.h): tensors under
// their HF names with the packed bytes unchanged, 4 KiB-aligned and checksummed; a
// generated config.json; prequant.json describing each tensor; clear errors for what
// cannot be mapped; pre-quantized HF directories refused at the door.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "store/gguf.h"
#include "store/prequant_info.h"
#include "store/quantized_artifact.h"
#include "store/quantized_save.h"
#include "store/store.h"
#include "tests/store/store_test_util.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/gguf_builder.h"
#include "tests/util/quant_test_util.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using ::testing::HasSubstr;
using loadstar::testing::GgufBuilder;

class GgufSaveTest : public ::testing::Test {
 protected:
  GgufSaveTest() { store_ = Store::Open({.root = dir_.Join("store")}).value(); }
  std::string Write(const GgufBuilder& b, const std::string& name = "m.gguf") {
    std::string path = dir_.Join(name);
    EXPECT_TRUE(WriteFileAtomically(Env::Default(), path, b.Build()).ok());
    return path;
  }
  loadstar::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(GgufSaveTest, StoresPackedTensorsUnderHfNames) {
  std::string path = Write(loadstar::testing::TinyLlamaGguf());
  GgufFile gguf = ReadGguf(Env::Default(), path).value();
  std::string file_bytes = ReadFileToString(Env::Default(), path).value();
  absl::StatusOr<Manifest> m = store_->Save(path, "org/tiny-gguf");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->extra_files, (std::vector<std::string>{"config.json", "prequant.json"}));
  ASSERT_EQ(m->tensors.size(), gguf.tensors.size() - 1);  // rope_freqs dropped
  EXPECT_EQ(m->Find("rope_freqs.weight"), nullptr);

  PrequantInfo info = ReadPrequantInfo(*store_, "org/tiny-gguf").value().value();
  EXPECT_EQ(info.format, "gguf");
  EXPECT_EQ(info.tensors.size(), m->tensors.size());
  for (const auto& [hf, p] : info.tensors) {
    const ManifestTensor* t = m->Find(hf);
    ASSERT_NE(t, nullptr) << hf;
    EXPECT_EQ(t->offset % kTensorAlignment, 0u) << hf;
    const GgufTensor* src = gguf.Find(p.source_name);
    ASSERT_NE(src, nullptr) << hf;
    EXPECT_EQ(p.ggml_type, src->type) << hf;
    EXPECT_EQ(p.shape, src->TorchShape()) << hf;
    EXPECT_EQ(ReadStoredTensor(*store_, *m, hf),
              file_bytes.substr(gguf.data_offset + src->offset, src->size))
        << hf;
  }
  const ManifestTensor* q = m->Find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, DType::kU8);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{256, 144}));  // rows x bytes per row (Q4_K)
  EXPECT_EQ(m->Find("model.norm.weight")->dtype, DType::kF16);
  EXPECT_EQ(m->Find("model.layers.0.input_layernorm.weight")->dtype, DType::kF32);
  EXPECT_EQ(info.Find("model.layers.0.self_attn.q_proj.weight")->permute_heads, 4);
  EXPECT_EQ(info.Find("model.layers.0.self_attn.k_proj.weight")->permute_heads, 2);
  EXPECT_EQ(info.Find("model.layers.0.self_attn.v_proj.weight")->permute_heads, 0);
  EXPECT_EQ(info.Find("lm_head.weight")->source_name, "output.weight");

  nlohmann::json config = nlohmann::json::parse(
      ReadFileToString(Env::Default(), store_->ModelDir("org/tiny-gguf").value() + "/config.json")
          .value());
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config["num_hidden_layers"], 1);
  EXPECT_EQ(config["hidden_size"], 256);
  EXPECT_EQ(config["intermediate_size"], 512);
  EXPECT_EQ(config["num_attention_heads"], 4);
  EXPECT_EQ(config["num_key_value_heads"], 2);
  EXPECT_EQ(config["head_dim"], 64);
  EXPECT_EQ(config["max_position_embeddings"], 128);
  EXPECT_EQ(config["rms_norm_eps"].get<double>(), static_cast<double>(1e-5f));
  EXPECT_EQ(config["rope_theta"].get<double>(), 10000.0);
  EXPECT_EQ(config["vocab_size"], 11);  // from the tokenizer's tokens
  EXPECT_EQ(config["tie_word_embeddings"], false);

  // No tokenizer.ggml.model: no tokenizer to keep.
  EXPECT_FALSE(Env::Default()->FileExists(store_->ModelDir("org/tiny-gguf").value() +
                                          "/tokenizer.gguf"));

  EXPECT_TRUE(store_->Verify("org/tiny-gguf").ok());
  // Quantized variants of packed tensors are made while loading, not stored.
  absl::StatusOr<Manifest> variant = SaveQuantizedVariant(
      *store_, "org/tiny-gguf", loadstar::testing::QuantConfigOf(quant::QuantType::kNf4));
  EXPECT_THAT(std::string(variant.status().message()),
              HasSubstr("is a pre-quantized gguf checkpoint"));
  // Nor by the one-pass save, which refuses before it writes anything.
  absl::StatusOr<ModelWithVariants> one_pass = SaveQuantized(
      *store_, path, "org/tiny-gguf-q", {loadstar::testing::QuantConfigOf(quant::QuantType::kNf4)});
  EXPECT_EQ(one_pass.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(one_pass.status().message()),
              HasSubstr("model org/tiny-gguf-q is a pre-quantized gguf checkpoint"));
  EXPECT_FALSE(Env::Default()->FileExists(store_->ModelDir("org/tiny-gguf-q").value()));
}

// The tokenizer metadata is kept as tokenizer.gguf: the same key-value section (every
// key and value, byte for byte) in a GGUF file without tensors, which transformers (and
// this reader) take as the original's metadata.
TEST_F(GgufSaveTest, KeepsTheTokenizerMetadataAsAGgufFile) {
  GgufBuilder b = loadstar::testing::TinyLlamaGguf();
  b.AddString("tokenizer.ggml.model", "llama");
  b.AddI32Array("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1});
  std::string path = Write(b);
  GgufFile gguf = ReadGguf(Env::Default(), path).value();
  absl::StatusOr<Manifest> m = store_->Save(path, "tok");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->extra_files,
            (std::vector<std::string>{"config.json", "prequant.json", "tokenizer.gguf"}));
  std::string kept =
      ReadFileToString(Env::Default(), store_->ModelDir("tok").value() + "/tokenizer.gguf").value();
  absl::StatusOr<GgufFile> parsed = ParseGguf(kept, "tokenizer.gguf");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->tensors.empty());
  EXPECT_EQ(parsed->metadata.size(), gguf.metadata.size());
  std::string original = ReadFileToString(Env::Default(), path).value();
  EXPECT_EQ(kept.substr(kGgufHeaderBytes),
            original.substr(kGgufHeaderBytes, gguf.metadata_end - kGgufHeaderBytes));
  EXPECT_EQ(parsed->GetString("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(parsed->Get("tokenizer.ggml.tokens")->strings,
            gguf.Get("tokenizer.ggml.tokens")->strings);
}

TEST_F(GgufSaveTest, MistralAndQwen2) {
  GgufBuilder mistral;
  mistral.AddString("general.architecture", "llama");
  mistral.AddString("general.name", "mistral");
  mistral.AddU32("llama.block_count", 1);
  mistral.AddTensor({"token_embd.weight", {32, 4}, 0, std::string(512, 0)});
  ASSERT_TRUE(store_->Save(Write(mistral, "a.gguf"), "mistral").ok());
  nlohmann::json c = nlohmann::json::parse(
      ReadFileToString(Env::Default(), store_->ModelDir("mistral").value() + "/config.json").value());
  EXPECT_EQ(c["model_type"], "mistral");
  EXPECT_EQ(c["tie_word_embeddings"], true);

  GgufBuilder qwen;
  qwen.AddString("general.architecture", "qwen2");
  qwen.AddU32("qwen2.block_count", 1);
  qwen.AddU32("qwen2.rope.dimension_count", 64);  // not head_dim for qwen2
  qwen.AddU32("qwen2.attention.head_count", 2);
  qwen.AddU32("qwen2.attention.head_count_kv", 2);
  qwen.AddTensor({"blk.0.attn_q.weight", {32, 4}, 0, std::string(512, 0)});
  qwen.AddTensor({"blk.0.attn_q.bias", {4}, 0, std::string(16, 0)});
  ASSERT_TRUE(store_->Save(Write(qwen, "b.gguf"), "qwen").ok());
  c = nlohmann::json::parse(
      ReadFileToString(Env::Default(), store_->ModelDir("qwen").value() + "/config.json").value());
  EXPECT_EQ(c["model_type"], "qwen2");
  EXPECT_FALSE(c.contains("head_dim"));
  PrequantInfo info = ReadPrequantInfo(*store_, "qwen").value().value();
  EXPECT_EQ(info.Find("model.layers.0.self_attn.q_proj.weight")->permute_heads, 0);
  EXPECT_NE(info.Find("model.layers.0.self_attn.q_proj.bias"), nullptr);
}

TEST_F(GgufSaveTest, ClearErrors) {
  GgufBuilder gemma;
  gemma.AddString("general.architecture", "gemma");
  absl::Status s = store_->Save(Write(gemma, "g.gguf"), "g").status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("g.gguf"));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("general.architecture \"gemma\" is not supported"));

  GgufBuilder odd;
  odd.AddString("general.architecture", "llama");
  odd.AddU32("llama.block_count", 1);
  odd.AddTensor({"blk.0.mystery.weight", {8}, 0, std::string(32, 0)});
  s = store_->Save(Write(odd, "o.gguf"), "o").status();
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("tensor \"blk.0.mystery.weight\" has no Hugging Face counterpart"));

  GgufBuilder layer;
  layer.AddString("general.architecture", "llama");
  layer.AddU32("llama.block_count", 1);
  layer.AddTensor({"blk.3.attn_q.weight", {8}, 0, std::string(32, 0)});
  s = store_->Save(Write(layer, "l.gguf"), "l").status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("layer 3 but block_count is 1"));

  std::string truncated = loadstar::testing::TinyLlamaGguf().Build();
  truncated.resize(truncated.size() / 2);
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), dir_.Join("t.gguf"), truncated).ok());
  s = store_->Save(dir_.Join("t.gguf"), "t").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("t.gguf"));
  EXPECT_FALSE(store_->GetManifest("t").ok());
}

TEST_F(GgufSaveTest, BitsandbytesConfigWithoutQuantizedTensorsIsRefused) {
  // (Well-formed saved bnb directories: tests/loader/bnb_saved_load_test.cc.)
  loadstar::testing::CheckpointBuilder builder;
  builder.Add("model.layers.0.mlp.up_proj.weight", DType::kF16, {8, 8});
  std::string src = dir_.Join("bnb");
  ASSERT_TRUE(builder.Write(src).ok());
  ASSERT_TRUE(WriteFileAtomically(
                  Env::Default(), src + "/config.json",
                  R"({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4"}})")
                  .ok());
  absl::Status s = store_->Save(src, "hf").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(src + "/config.json"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("says bitsandbytes nf4-bs64 but no tensor"));
  ASSERT_TRUE(WriteFileAtomically(
                  Env::Default(), src + "/config.json",
                  R"({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_blocksize": 48}})")
                  .ok());
  s = store_->Save(src, "hf").status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("quantization_config.bnb_4bit_blocksize"));
}

}  // namespace
}  // namespace loadstar::store
