#include "store/gguf_model.h"

#include <cstring>

#include <charconv>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/status_macros.h"
#include "store/hf_checkpoint.h"

namespace loadstar::store {
namespace {

absl::Status Invalid(const GgufFile& file, const std::string& what) {
  return absl::InvalidArgumentError(fmt::format("{}: {}", file.path, what));
}

// <arch>.<key> -> config.json key (transformers' GGUF_CONFIG_MAPPING for llama/mistral/qwen2).
struct ConfigKey {
  const char* gguf;
  const char* hf;
  bool llama_only;  // rope.dimension_count is head_dim for llama/mistral, ignored for qwen2
};
constexpr ConfigKey kConfigKeys[] = {
    {"context_length", "max_position_embeddings", false},
    {"block_count", "num_hidden_layers", false},
    {"feed_forward_length", "intermediate_size", false},
    {"embedding_length", "hidden_size", false},
    {"rope.dimension_count", "head_dim", true},
    {"rope.freq_base", "rope_theta", false},
    {"attention.head_count", "num_attention_heads", false},
    {"attention.head_count_kv", "num_key_value_heads", false},
    {"attention.layer_norm_rms_epsilon", "rms_norm_eps", false},
    {"vocab_size", "vocab_size", false},
};

// blk.N.<part> -> model.layers.N.<hf part>
const std::map<std::string, std::string>& BlockParts() {
  static const auto* parts = new std::map<std::string, std::string>{
      {"attn_norm", "input_layernorm"},
      {"attn_q", "self_attn.q_proj"},
      {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},
      {"attn_output", "self_attn.o_proj"},
      {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},
      {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},
  };
  return *parts;
}

std::string_view ArchitectureClass(std::string_view model_type) {
  if (model_type == "llama") return "LlamaForCausalLM";
  if (model_type == "mistral") return "MistralForCausalLM";
  return "Qwen2ForCausalLM";
}

nlohmann::json ToJson(const GgufValue& v) {
  if (!v.floats.empty()) return v.floats[0];
  if (!v.strings.empty()) return v.strings[0];
  if (v.elem_type == GgufValueType::kBool) return v.ints[0] != 0;
  if (!v.u64_bits.empty()) return v.u64_bits[0];
  return v.ints[0];
}

// "" (dropped) or the HF name of `name`, or an error.
absl::StatusOr<std::string> HfName(const GgufFile& file, const std::string& name,
                                   int64_t block_count) {
  std::string base = name, suffix;
  for (std::string_view s : {".weight", ".bias"}) {
    if (name.size() > s.size() && name.ends_with(s)) {
      base = name.substr(0, name.size() - s.size());
      suffix = std::string(s);
    }
  }
  auto unknown = [&] {
    return Invalid(file, fmt::format("tensor \"{}\" has no Hugging Face counterpart in this "
                                     "architecture",
                                     name));
  };
  if (suffix.empty()) return unknown();
  if (base == "rope_freqs") return std::string();
  if (base == "token_embd") return "model.embed_tokens" + suffix;
  if (base == "output_norm") return "model.norm" + suffix;
  if (base == "output") return "lm_head" + suffix;
  if (!base.starts_with("blk.")) return unknown();
  size_t dot = base.find('.', 4);
  if (dot == std::string::npos) return unknown();
  std::string_view number(base.data() + 4, dot - 4);
  int64_t layer = -1;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), layer);
  if (ec != std::errc() || end != number.data() + number.size() || layer < 0) return unknown();
  if (layer >= block_count) {
    return Invalid(file, fmt::format("tensor \"{}\": layer {} but block_count is {}", name,
                                     layer, block_count));
  }
  auto part = BlockParts().find(base.substr(dot + 1));
  if (part == BlockParts().end()) return unknown();
  return fmt::format("model.layers.{}.{}{}", layer, part->second, suffix);
}

}  // namespace

absl::StatusOr<GgufModel> MapGgufModel(const GgufFile& file) {
  std::optional<std::string> arch = file.GetString("general.architecture");
  if (!arch) return Invalid(file, "general.architecture is missing or not a string");
  GgufModel model;
  if (*arch == "llama") {
    model.model_type = file.GetString("general.name") == "mistral" ? "mistral" : "llama";
  } else if (*arch == "qwen2") {
    model.model_type = "qwen2";
  } else {
    return Invalid(file, fmt::format("general.architecture \"{}\" is not supported (supported: "
                                     "llama, mistral, qwen2)",
                                     *arch));
  }
  const bool llama_family = *arch == "llama";

  nlohmann::json config = nlohmann::json::object();
  config["architectures"] = {std::string(ArchitectureClass(model.model_type))};
  config["model_type"] = model.model_type;
  for (const ConfigKey& key : kConfigKeys) {
    if (key.llama_only && !llama_family) continue;
    std::string gguf_key = fmt::format("{}.{}", *arch, key.gguf);
    const GgufValue* v = file.Get(gguf_key);
    if (v == nullptr) continue;
    if (v->is_array() || v->count() != 1 || !v->strings.empty()) {
      return Invalid(file, fmt::format("{} must be a number", gguf_key));
    }
    config[key.hf] = ToJson(*v);
  }
  if (!config.contains("vocab_size")) {
    if (const GgufValue* tokens = file.Get("tokenizer.ggml.tokens")) {
      config["vocab_size"] = tokens->strings.size();
    }
  }
  if (!config.contains("num_hidden_layers") || !config["num_hidden_layers"].is_number_integer()) {
    return Invalid(file, fmt::format("{}.block_count is missing", *arch));
  }
  const int64_t block_count = config["num_hidden_layers"].get<int64_t>();
  config["tie_word_embeddings"] = file.Find("output.weight") == nullptr;

  int64_t q_heads = 0, k_heads = 0;
  if (llama_family && config.contains("num_attention_heads") &&
      config.contains("num_key_value_heads") && config["num_attention_heads"].is_number_integer() &&
      config["num_key_value_heads"].is_number_integer()) {
    q_heads = config["num_attention_heads"].get<int64_t>();
    k_heads = config["num_key_value_heads"].get<int64_t>();
  }

  for (const GgufTensor& t : file.tensors) {
    ASSIGN_OR_RETURN(std::string hf, HfName(file, t.name, block_count));
    if (hf.empty()) continue;
    for (int64_t d : t.dims) {
      if (d == 0) return Invalid(file, fmt::format("tensor \"{}\" is empty", t.name));
    }
    PrequantTensor info;
    info.ggml_type = t.type;
    info.shape = t.TorchShape();
    info.source_name = t.name;
    const bool is_q = t.name.find(".attn_q.") != std::string::npos;
    const bool is_k = t.name.find(".attn_k.") != std::string::npos;
    if ((is_q || is_k) && q_heads > 0 && k_heads > 0) {
      info.permute_heads = is_q ? q_heads : k_heads;
      if (info.shape.size() > 2 || info.shape[0] % (2 * info.permute_heads) != 0) {
        return Invalid(file, fmt::format("tensor \"{}\": {} rows cannot be split into {} heads "
                                         "of row pairs",
                                         t.name, info.shape[0], info.permute_heads));
      }
    }
    GgufModelTensor m;
    m.source = &t;
    m.hf_name = hf;
    switch (t.type) {
      case quant::GgmlType::kF32: m.stored_dtype = DType::kF32; break;
      case quant::GgmlType::kF16: m.stored_dtype = DType::kF16; break;
      case quant::GgmlType::kBF16: m.stored_dtype = DType::kBF16; break;
      default: m.stored_dtype = DType::kU8; break;
    }
    m.stored_shape = info.shape;
    if (m.stored_dtype == DType::kU8) {
      m.stored_shape.back() = static_cast<int64_t>(t.size) / std::max<int64_t>(1, t.rows());
    }
    if (!model.info.tensors.emplace(hf, std::move(info)).second) {
      return Invalid(file, fmt::format("tensor \"{}\" maps to {} twice", t.name, hf));
    }
    model.tensors.push_back(std::move(m));
  }
  if (model.tensors.empty()) return Invalid(file, "no tensors");
  model.config_json = config.dump(2);
  return model;
}

absl::StatusOr<std::optional<std::string>> GgufTokenizerFile(const GgufFile& gguf,
                                                             const RandomAccessFile& file) {
  if (!gguf.GetString("tokenizer.ggml.model")) return std::optional<std::string>();
  const uint64_t kv_bytes = gguf.metadata_end - kGgufHeaderBytes;
  if (gguf.metadata_end < kGgufHeaderBytes || kv_bytes + kGgufHeaderBytes > kMaxKeptFileBytes) {
    return std::optional<std::string>();
  }
  std::string out(kGgufHeaderBytes + kv_bytes, '\0');
  auto put = [&](uint64_t at, auto value) { std::memcpy(out.data() + at, &value, sizeof(value)); };
  put(0, kGgufMagic);
  put(4, gguf.version);
  put(8, uint64_t{0});  // no tensors
  put(16, static_cast<uint64_t>(gguf.metadata.size()));
  ASSIGN_OR_RETURN(size_t got, file.Read(kGgufHeaderBytes, kv_bytes, out.data() + kGgufHeaderBytes));
  if (got != kv_bytes) {
    return absl::DataLossError(fmt::format("{}: short read of the metadata", gguf.path));
  }
  return std::optional<std::string>(std::move(out));
}

}  // namespace loadstar::store
