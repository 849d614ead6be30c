// What a stored pre-quantized checkpoint's packed tensors are (SPEC §6.1): the contract
// between the store (which writes it when it saves a GGUF file) and the loader (which
// serves the packed bytes as they are, `keep`, or dequantizes them while streaming,
// `none` / nf4 / fp4 / int8).
//
// Kept beside the manifest as the extra file `prequant.json` (so consumers can read it
// too, like config.json):
//   {"format": "gguf",
//    "tensors": {"model.layers.0.self_attn.q_proj.weight":
//                  {"ggml_type": "Q4_K", "shape": [4096, 4096],
//                   "source_name": "blk.0.attn_q.weight", "permute_heads": 32}, ...}}
// or, for saved bitsandbytes directories: {"format": "bitsandbytes", "quantization":
// {quantization_config}}; or, for GPTQ / AWQ HF directories (tensors stored as in the
// checkpoint):
//   {"format": "gptq", "linears": {"model.layers.0.self_attn.q_proj":
//      {"bits": 4, "in": 4096, "out": 4096, "group_size": 128, "g_idx": true, "v2": false}}}
// `shape` is the logical (dequantized) torch shape; the stored tensor holds the packed
// bytes as dtype U8 with shape [rows..., bytes per row] (or, for F32/F16/BF16, that
// dtype and the logical shape). `permute_heads` > 0 says the rows are in llama.cpp's
// rotary order and dequantization must undo it as transformers does
// (LlamaTensorProcessor._reverse_permute_weights with that head count); 0: none.
//
// Thread safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/ggml_types.h"

namespace loadstar::store {

class Store;

inline constexpr char kPrequantInfoFileName[] = "prequant.json";

struct PrequantTensor {
  quant::GgmlType ggml_type = quant::GgmlType::kF32;
  std::vector<int64_t> shape;  // logical torch shape
  std::string source_name;     // the tensor's name in the source file
  int64_t permute_heads = 0;

  int64_t row_elems() const { return shape.back(); }
  int64_t rows() const;  // product of shape[0..n-1)
  bool operator==(const PrequantTensor&) const = default;
};

// A GPTQ or AWQ packed Linear layer (quant/gptq_awq.h): its stored tensors are
// <module>.qweight, .qzeros, .scales and, for GPTQ with act-order, .g_idx.
struct PrequantLinear {
  int bits = 4;
  int64_t in = 0, out = 0;
  int64_t group_size = 0;  // resolved (in_features for -1)
  bool g_idx = false;      // the module has a g_idx tensor
  bool v2 = false;         // GPTQ checkpoint_format gptq_v2 (zeros stored as is)
  bool operator==(const PrequantLinear&) const = default;
};

struct PrequantInfo {
  std::string format = "gguf";                    // gguf | gptq | awq | bitsandbytes
  std::map<std::string, PrequantTensor> tensors;  // gguf: by stored (HF) tensor name
  std::map<std::string, PrequantLinear> linears;  // gptq / awq: by module name
  // bitsandbytes: the checkpoint's quantization_config (a JSON object), whose tensors are
  // already in the HF bnb state-dict layout loadstar's variants use (quant/quant_state.h).
  std::string quantization_json;

  const PrequantTensor* Find(std::string_view name) const;
  // The linear layer a stored tensor belongs to ("m.qweight" -> "m"), with the suffix
  // ("qweight" | "qzeros" | "scales" | "g_idx"); nullptr otherwise.
  const PrequantLinear* FindLinear(std::string_view tensor, std::string* module,
                                   std::string* part) const;
  bool operator==(const PrequantInfo&) const = default;
};

std::string SerializePrequantInfo(const PrequantInfo& info);

// Validates types, shapes (row length a multiple of the ggml block) and names;
// InvalidArgument naming `source` and the tensor.
absl::StatusOr<PrequantInfo> ParsePrequantInfo(std::string_view json, std::string_view source);

// The info of stored model `name`, or nullopt when it is not a pre-quantized checkpoint.
// Errors: the model is unreadable, or its prequant.json is invalid.
absl::StatusOr<std::optional<PrequantInfo>> ReadPrequantInfo(const Store& store,
                                                             const std::string& name);

}  // namespace loadstar::store
