#include "quant/policy.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <fmt/format.h>

#include "quant/cpu_kernels.h"
#include "quant/float16.h"

namespace loadstar {
namespace quant {
namespace {

absl::Status KeyError(std::string_view path, std::string_view key, const std::string& what) {
  return absl::InvalidArgumentError(fmt::format("{}.{}: {}", path, key, what));
}

std::string JsonType(const nlohmann::json& v) { return v.type_name(); }

// A value for an error message. Configs also arrive as YAML turned into JSON
// (daemon/yaml_fields.h), whose strings nobody checked for UTF-8: plain dump() throws on
// bad UTF-8, so replace it instead.
std::string Dump(const nlohmann::json& v) {
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<bool> GetBool(std::string_view path, std::string_view key,
                             const nlohmann::json& v) {
  if (!v.is_boolean()) {
    return KeyError(path, key, fmt::format("expected a boolean, got {} {}", JsonType(v), Dump(v)));
  }
  return v.get<bool>();
}

absl::StatusOr<std::string> GetString(std::string_view path, std::string_view key,
                                      const nlohmann::json& v) {
  if (!v.is_string()) {
    return KeyError(path, key, fmt::format("expected a string, got {} {}", JsonType(v), Dump(v)));
  }
  return v.get<std::string>();
}

absl::StatusOr<DType> ParseComputeDtype(std::string_view path, std::string_view key,
                                        const std::string& s) {
  std::string v = s;
  if (v.rfind("torch.", 0) == 0) v = v.substr(6);  // "torch.bfloat16" as HF sometimes writes
  if (v == "float16" || v == "bfloat16" || v == "float32") return *ParseTorchDType(v);
  return KeyError(path, key,
                  fmt::format("unknown dtype \"{}\"; expected float16, bfloat16 or float32", s));
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? s.npos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

bool Contains(std::string_view s, std::string_view sub) { return s.find(sub) != s.npos; }

bool IsEmbedding(const std::vector<std::string_view>& parts) {
  for (std::string_view p : parts) {
    if (Contains(p, "embed") || p == "wte" || p == "wpe") return true;
  }
  return false;
}

bool IsNorm(const std::vector<std::string_view>& parts) {
  for (std::string_view p : parts) {
    if (Contains(p, "norm") || p.rfind("ln_", 0) == 0 || p == "ln") return true;
  }
  return false;
}

bool IsSkipped(std::string_view module, const std::vector<std::string>& skip) {
  const std::string padded = "." + std::string(module) + ".";
  for (const std::string& s : skip) {
    if (s.empty()) continue;
    if (module == s) return true;
    if (Contains(padded, "." + s + ".")) return true;  // whole components, any depth
  }
  return false;
}

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

std::string QuantConfig::VariantKey() const {
  switch (type) {
    case QuantType::kNone:
      return "none";
    case QuantType::kInt8:
      return "int8";
    case QuantType::kFp4:
    case QuantType::kNf4:
      return fmt::format("{}-bs{}{}", QuantTypeName(type), blocksize, double_quant ? "-dq" : "");
  }
  return "unknown";
}

nlohmann::json QuantConfig::ToHfJson() const {
  nlohmann::json j;
  j["quant_method"] = "bitsandbytes";
  j["load_in_4bit"] = type == QuantType::kNf4 || type == QuantType::kFp4;
  j["load_in_8bit"] = type == QuantType::kInt8;
  j["llm_int8_threshold"] = llm_int8_threshold;
  j["llm_int8_skip_modules"] = skip_modules;
  j["llm_int8_has_fp16_weight"] = false;
  j["llm_int8_enable_fp32_cpu_offload"] = false;
  j["bnb_4bit_quant_type"] = type == QuantType::kFp4 ? "fp4" : "nf4";
  j["bnb_4bit_use_double_quant"] = double_quant;
  j["bnb_4bit_compute_dtype"] = std::string(TorchDTypeName(compute_dtype));
  j["bnb_4bit_quant_storage"] = "uint8";
  if (blocksize != kDefaultBlocksize) j["bnb_4bit_blocksize"] = blocksize;
  return j;
}

absl::StatusOr<QuantConfig> ParseQuantizationConfig(const nlohmann::json& config,
                                                    std::string_view path) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: expected a mapping, got {}", path, JsonType(config)));
  }
  QuantConfig out;
  bool load_4bit = false, load_8bit = false;
  std::string quant_type = "fp4";  // HF's default bnb_4bit_quant_type
  bool blocksize_set = false;
  for (const auto& [key, v] : config.items()) {
    if (key == "load_in_4bit" || key == "_load_in_4bit") {
      auto b = GetBool(path, key, v);
      if (!b.ok()) return b.status();
      load_4bit = load_4bit || *b;
    } else if (key == "load_in_8bit" || key == "_load_in_8bit") {
      auto b = GetBool(path, key, v);
      if (!b.ok()) return b.status();
      load_8bit = load_8bit || *b;
    } else if (key == "bnb_4bit_quant_type") {
      auto s = GetString(path, key, v);
      if (!s.ok()) return s.status();
      if (*s != "nf4" && *s != "fp4") {
        return KeyError(path, key, fmt::format("unknown quant type \"{}\"; expected nf4 or fp4", *s));
      }
      quant_type = *s;
    } else if (key == "bnb_4bit_use_double_quant") {
      auto b = GetBool(path, key, v);
      if (!b.ok()) return b.status();
      out.double_quant = *b;
    } else if (key == "bnb_4bit_compute_dtype") {
      if (v.is_null()) continue;
      auto s = GetString(path, key, v);
      if (!s.ok()) return s.status();
      auto d = ParseComputeDtype(path, key, *s);
      if (!d.ok()) return d.status();
      out.compute_dtype = *d;
    } else if (key == "bnb_4bit_blocksize") {
      if (!v.is_number_integer()) {
        return KeyError(path, key, fmt::format("expected an integer, got {}", Dump(v)));
      }
      const int64_t bs = v.get<int64_t>();
      if (absl::Status s = CheckBlocksize(bs, fmt::format("{}.{}", path, key)); !s.ok()) return s;
      out.blocksize = static_cast<int>(bs);
      blocksize_set = true;
    } else if (key == "llm_int8_threshold") {
      if (!v.is_number()) {
        return KeyError(path, key, fmt::format("expected a number, got {}", Dump(v)));
      }
      const double t = v.get<double>();
      if (!(t >= 0.0) || !std::isfinite(t)) {
        return KeyError(path, key, fmt::format("must be a finite number >= 0, got {}", Dump(v)));
      }
      out.llm_int8_threshold = static_cast<float>(t);
    } else if (key == "llm_int8_skip_modules") {
      if (v.is_null()) continue;  // HF writes null for "use the default"
      if (!v.is_array()) {
        return KeyError(path, key, fmt::format("expected a list of module names, got {}", Dump(v)));
      }
      out.skip_modules.clear();
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_string()) {
          return KeyError(path, fmt::format("{}[{}]", key, i),
                          fmt::format("expected a string, got {}", Dump(v[i])));
        }
        out.skip_modules.push_back(v[i].get<std::string>());
      }
    } else if (key == "quant_method") {
      auto s = GetString(path, key, v);
      if (!s.ok()) return s.status();
      if (*s != "bitsandbytes") {
        return KeyError(path, key,
                        fmt::format("unsupported quant_method \"{}\"; expected bitsandbytes", *s));
      }
    } else if (key == "bnb_4bit_quant_storage") {
      auto s = GetString(path, key, v);
      if (!s.ok()) return s.status();
      if (*s != "uint8") {
        return KeyError(path, key, fmt::format("only uint8 storage is supported, got \"{}\"", *s));
      }
    } else if (key == "llm_int8_has_fp16_weight" || key == "llm_int8_enable_fp32_cpu_offload") {
      auto b = GetBool(path, key, v);
      if (!b.ok()) return b.status();
      if (*b) return KeyError(path, key, "true is not supported by loadstar");
    } else {
      return KeyError(path, key, "unknown key");
    }
  }
  if (load_4bit && load_8bit) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: load_in_4bit and load_in_8bit are both true; choose one", path));
  }
  if (load_4bit) {
    out.type = quant_type == "nf4" ? QuantType::kNf4 : QuantType::kFp4;
  } else if (load_8bit) {
    out.type = QuantType::kInt8;
  }
  if (blocksize_set && !load_4bit) {
    return absl::InvalidArgumentError(
        fmt::format("{}.bnb_4bit_blocksize: only applies with load_in_4bit: true", path));
  }
  return out;
}

absl::StatusOr<QuantConfig> ParseQuantizationShorthand(std::string_view value,
                                                       std::string_view path) {
  QuantConfig out;
  if (value == "nf4" || value == "bitsandbytes-nf4") {
    out.type = QuantType::kNf4;
  } else if (value == "fp4" || value == "bitsandbytes-fp4") {
    out.type = QuantType::kFp4;
  } else if (value == "int8" || value == "bitsandbytes") {
    out.type = QuantType::kInt8;
  } else if (value == "none" || value.empty()) {
    out.type = QuantType::kNone;
  } else if (value == "keep") {
    out.type = QuantType::kNone;
    out.keep_prequantized = true;
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "{}: unknown quantization \"{}\"; expected nf4, fp4, int8, none, keep, bitsandbytes, "
        "bitsandbytes-nf4 or bitsandbytes-fp4",
        path, value));
  }
  return out;
}

absl::StatusOr<DType> ParseTorchDtype(std::string_view value, std::string_view path) {
  if (value == "float16" || value == "bfloat16" || value == "float32") {
    return *ParseTorchDType(value);
  }
  return absl::InvalidArgumentError(fmt::format(
      "{}: unknown dtype \"{}\"; expected float16, bfloat16 or float32", path, value));
}

QuantType ShouldQuantize(const QuantConfig& config, std::string_view tensor_name,
                         const std::vector<int64_t>& shape) {
  if (config.type == QuantType::kNone || shape.size() != 2) return QuantType::kNone;
  constexpr std::string_view kSuffix = ".weight";
  if (tensor_name.size() <= kSuffix.size() ||
      tensor_name.substr(tensor_name.size() - kSuffix.size()) != kSuffix) {
    return QuantType::kNone;
  }
  const std::string_view module = tensor_name.substr(0, tensor_name.size() - kSuffix.size());
  const std::vector<std::string_view> parts = Split(module, '.');
  if (IsEmbedding(parts) || IsNorm(parts) || IsSkipped(module, config.skip_modules)) {
    return QuantType::kNone;
  }
  return config.type;
}

bool IsConv1DWeight(std::string_view model_type, std::string_view tensor_name,
                    const std::vector<int64_t>& shape) {
  if (shape.size() != 2) return false;
  if (model_type != "gpt2" && model_type != "openai-gpt" && model_type != "imagegpt" &&
      model_type != "decision_transformer") {
    return false;
  }
  constexpr std::string_view kSuffix = ".weight";
  if (tensor_name.size() <= kSuffix.size() ||
      tensor_name.substr(tensor_name.size() - kSuffix.size()) != kSuffix) {
    return false;
  }
  const std::string_view module = tensor_name.substr(0, tensor_name.size() - kSuffix.size());
  const size_t dot = module.rfind('.');
  const std::string_view leaf = dot == std::string_view::npos ? module : module.substr(dot + 1);
  return leaf == "c_attn" || leaf == "c_proj" || leaf == "c_fc" || leaf == "q_attn";
}

absl::Status CastFloatTensor(DType from, const void* in, int64_t n, DType to, void* out) {
  auto ok = [](DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; };
  if (!ok(from) || !ok(to)) {
    return absl::InvalidArgumentError(fmt::format("cannot cast {} to {}: F32/F16/BF16 only",
                                                  DTypeName(from), DTypeName(to)));
  }
  if (n <= 0) return absl::OkStatus();
  const internal::CpuKernels& k = internal::BestKernels();
  const size_t in_size = DTypeSize(from), out_size = DTypeSize(to);
  // Large tensors: split across threads (blocks of 64 Ki elements).
  const int threads = n < (int64_t{1} << 20) ? 1 : 0;
  internal::ParallelFor(n, int64_t{1} << 16, threads, [&](int64_t b, int64_t e) {
    k.cast(from, static_cast<const uint8_t*>(in) + b * in_size, e - b, to,
           static_cast<uint8_t*>(out) + b * out_size);
  });
  return absl::OkStatus();
}

Footprint TensorFootprint(const QuantConfig& config, std::string_view tensor_name, DType dtype,
                          const std::vector<int64_t>& shape) {
  const int64_t n = Product(shape);
  Footprint f;
  switch (ShouldQuantize(config, tensor_name, shape)) {
    case QuantType::kNf4:
    case QuantType::kFp4: {
      const int64_t blocks = (n + config.blocksize - 1) / config.blocksize;
      f.weights = (n + 1) / 2;
      f.quant_state = kFp4CodeCount * 4;  // quant_map
      if (config.double_quant) {
        f.quant_state += blocks + (blocks + kNestedBlocksize - 1) / kNestedBlocksize * 4 +
                         kDynamicMapSize * 4 + 4;  // codes, nested_absmax, map, offset
      } else {
        f.quant_state += blocks * 4;
      }
      break;
    }
    case QuantType::kInt8:
      f.weights = n;
      f.quant_state = shape[0] * 4;  // SCB
      break;
    case QuantType::kNone:
      f.weights = n * static_cast<int64_t>(IsFloating(dtype) ? DTypeSize(config.torch_dtype)
                                                             : DTypeSize(dtype));
      break;
  }
  return f;
}

Footprint ModelFootprint(const QuantConfig& config, const std::vector<TensorInfo>& tensors) {
  Footprint total;
  for (const TensorInfo& t : tensors) {
    const Footprint f = TensorFootprint(config, t.name, t.dtype, t.shape);
    total.weights += f.weights;
    total.quant_state += f.quant_state;
  }
  return total;
}

}  // namespace quant
}  // namespace loadstar
