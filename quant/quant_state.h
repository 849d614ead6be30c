// Serialization of quantized weights in the HF / bitsandbytes state-dict layout (SPEC §6),
// as plain named tensors so store/ and export can write them to safetensors:
//
//   4-bit (Params4bit + QuantState.as_dict(packed=True)), for weight name "<m>.weight":
//     <m>.weight                                   U8  [(n+1)/2, 1]  packed codes
//     <m>.weight.absmax                            F32 [blocks]      (U8 codes when nested)
//     <m>.weight.quant_map                         F32 [16]
//     <m>.weight.nested_absmax                     F32 [ceil(blocks/256)]   (nested only)
//     <m>.weight.nested_quant_map                  F32 [256]                (nested only)
//     <m>.weight.quant_state.bitsandbytes__<nf4|fp4>  U8 [len]  JSON bytes exactly as
//         bitsandbytes' pack_dict_to_tensor(json.dumps(...)) writes them:
//         {"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [r, c],
//          "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": <repr>}
//   int8 (Linear8bitLt): <m>.weight I8 [rows, cols], <m>.SCB F32 [rows],
//                        <m>.weight_format U8 [] = 0 ("row").
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "quant/blockwise.h"
#include "quant/int8.h"

namespace loadstar {
namespace quant {

struct NamedTensor {
  std::string name;             // state-dict key
  DType dtype = DType::kU8;     // element type
  std::vector<int64_t> shape;   // dims; empty for a scalar
  std::vector<uint8_t> data;    // little-endian bytes, prod(shape) * DTypeSize(dtype)
};

// Finds a tensor by name; nullptr when absent.
using TensorLookup = std::function<const NamedTensor*(std::string_view name)>;

// The quant_state JSON text of a 4-bit weight (bitsandbytes' exact bytes).
std::string QuantStateJson(const Quantized4bit& q);

// Python's repr() of a double (shortest round-trip digits, Python's fixed/exponent rule),
// as json.dumps writes floats.
std::string PythonFloatRepr(double value);

// Tensors of a 4-bit weight named `weight_name` ("model.layers.0.mlp.up_proj.weight").
std::vector<NamedTensor> Serialize4bit(std::string_view weight_name, const Quantized4bit& q);

// Tensors of an int8 weight; `weight_name` ends with ".weight" (SCB goes beside it).
std::vector<NamedTensor> SerializeInt8(std::string_view weight_name, const QuantizedInt8& q);

// Parses a 4-bit weight back (validating names, dtypes, shapes and the JSON).
absl::StatusOr<Quantized4bit> Parse4bit(std::string_view weight_name,
                                        const TensorLookup& lookup);

// Parses an int8 weight back.
absl::StatusOr<QuantizedInt8> ParseInt8(std::string_view weight_name,
                                        const TensorLookup& lookup);

// Tensor names that Serialize4bit / SerializeInt8 produce for a weight, so a reader can
// tell quant-state tensors from model tensors ("<m>.weight.absmax" -> true).
bool IsQuantStateTensorName(std::string_view name);

}  // namespace quant
}  // namespace loadstar
