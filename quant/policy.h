// Quantization policy: what a deployment asks for (QuantConfig, parsed from the HF
// BitsAndBytesConfig fields or a shorthand), which tensors it applies to
// (ShouldQuantize), the dtype cast of everything else, and the memory footprint.
//
// Accepted forms (SPEC §3.2), all with key-path error messages:
//   quantization_config: {load_in_4bit: true, bnb_4bit_quant_type: nf4, ...}   (HF fields,
//       also the "_load_in_4bit"/"_load_in_8bit" spellings of saved config.json files,
//       quant_method: bitsandbytes, and loadstar's bnb_4bit_blocksize extension)
//   quantization: nf4 | fp4 | int8 | none | keep (pre-quantized checkpoints as stored) |
//                 bitsandbytes (= int8, as TGI) | bitsandbytes-nf4 | bitsandbytes-fp4
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "quant/blockwise.h"
#include "quant/quant_types.h"

namespace loadstar {
namespace quant {

struct QuantConfig {
  QuantType type = QuantType::kNone;          // none | int8 | fp4 | nf4
  int blocksize = kDefaultBlocksize;          // 4-bit blocksize (bnb_4bit_blocksize)
  bool double_quant = false;                  // bnb_4bit_use_double_quant
  DType compute_dtype = DType::kF32;          // bnb_4bit_compute_dtype (HF default float32)
  DType torch_dtype = DType::kF16;            // dtype of every tensor not quantized
  float llm_int8_threshold = 6.0f;            // LLM.int8 outlier threshold
  std::vector<std::string> skip_modules = {"lm_head"};  // llm_int8_skip_modules
  // `quantization: keep` (SPEC §6.1): serve a pre-quantized checkpoint's packed tensors
  // as stored (type is kNone). Without it a pre-quantized checkpoint is dequantized to
  // torch_dtype (kNone) or dequantized and re-quantized (nf4|fp4|int8) while streaming.
  bool keep_prequantized = false;
  // The deployment named no quantization (type is kNone): a pre-quantized checkpoint is
  // then served as transformers / TGI would: GGUF dequantized (none), GPTQ/AWQ as
  // stored (keep). An explicit `quantization: none` dequantizes every format.
  bool unspecified = false;

  // Canonical name of the quantized variant, used as the store artifact key:
  // "nf4-bs64-dq", "fp4-bs128", "int8", "none" (torch_dtype is not part of it).
  std::string VariantKey() const;
  // The 4-bit spec. REQUIRES: type is kNf4 or kFp4.
  Fp4Spec fp4_spec() const { return {type, blocksize, double_quant}; }
  // The HF quantization_config to write into an exported config.json
  // (quant_method: bitsandbytes, load_in_4bit/8bit, bnb_4bit_* fields).
  nlohmann::json ToHfJson() const;
};

// Parses an HF BitsAndBytesConfig object. `path` prefixes error messages
// ("backend_config.quantization_config"). Unknown keys, wrong types and impossible values
// (blocksize 48, both load_in_4bit and load_in_8bit, unknown quant type) are
// InvalidArgument naming the key ("<path>.bnb_4bit_blocksize: ...").
absl::StatusOr<QuantConfig> ParseQuantizationConfig(
    const nlohmann::json& config, std::string_view path = "quantization_config");

// Parses the `quantization:` shorthand.
absl::StatusOr<QuantConfig> ParseQuantizationShorthand(std::string_view value,
                                                       std::string_view path = "quantization");

// Parses a torch_dtype value ("float16" | "bfloat16" | "float32").
absl::StatusOr<DType> ParseTorchDtype(std::string_view value,
                                      std::string_view path = "torch_dtype");

// The quantization to apply to one checkpoint tensor: config.type for 2-D `*.weight`
// tensors of Linear layers; kNone (cast to torch_dtype) for everything else: 1-D tensors,
// biases, embeddings (a path component containing "embed" or "embeddings", or named
// wte / wpe), norms (a component containing "norm", or starting with "ln_" or named "ln"),
// and modules in skip_modules (a module path equal to an entry, or ending with
// "." + entry, or containing entry + "." as whole components, as transformers does).
QuantType ShouldQuantize(const QuantConfig& config, std::string_view tensor_name,
                         const std::vector<int64_t>& shape);

// True for the 2-D weights of transformers' Conv1D modules (GPT-2 family: model_type
// gpt2 / openai-gpt / imagegpt / decision_transformer; modules c_attn, c_proj, c_fc,
// q_attn). Their checkpoint layout is [in, out]; transformers transposes them to
// [out, in] before bitsandbytes quantizes (4-bit and int8), so PrepareTensor /
// StreamingQuantizer must be told to transpose (the exported weight is then [out, in]).
bool IsConv1DWeight(std::string_view model_type, std::string_view tensor_name,
                    const std::vector<int64_t>& shape);

// Casts n floating elements (F32/F16/BF16) between dtypes with one RNE rounding, as
// torch's .to(dtype) (SIMD + threads for large tensors). InvalidArgument for other dtypes.
absl::Status CastFloatTensor(DType from, const void* in, int64_t n, DType to, void* out);

// Bytes a tensor occupies once loaded under `config`.
struct Footprint {
  int64_t weights = 0;      // the stored weight (packed 4-bit, int8, or torch_dtype values)
  int64_t quant_state = 0;  // absmax / nested state / quant maps / SCB
  int64_t total() const { return weights + quant_state; }
};

// Footprint of one tensor (dtype is the checkpoint dtype; non-floating tensors keep it).
Footprint TensorFootprint(const QuantConfig& config, std::string_view tensor_name,
                          DType dtype, const std::vector<int64_t>& shape);

// Sum over tensors. `weights` equals transformers' get_memory_footprint() (parameters
// only: bitsandbytes keeps absmax/SCB outside the parameters); total() adds the state.
struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};
Footprint ModelFootprint(const QuantConfig& config, const std::vector<TensorInfo>& tensors);

}  // namespace quant
}  // namespace loadstar
