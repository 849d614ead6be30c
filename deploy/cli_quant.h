// Quantization flags shared by `store save --quantize`, `store export --quantization` and
// `load --quantization`:
//
//   TYPE                         nf4 | fp4 | int8 (also the SPEC §3.2 shorthands:
//                                bitsandbytes, bitsandbytes-nf4, bitsandbytes-fp4)
//   TYPE-bsN[-dq]                a variant key as `store ls` prints it (nf4-bs128-dq)
//   --blocksize N, --double-quant    apply to every 4-bit TYPE given without a key suffix
//   --torch-dtype float16|bfloat16|float32   dtype of the tensors left unquantized
//
// Errors are InvalidArgument, one line naming the flag ("--blocksize 48: ...").
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "quant/policy.h"

namespace loadstar::cli {

struct QuantFlags {
  int blocksize = 0;  // 0: the default (64)
  bool double_quant = false;
  std::string torch_dtype = "float16";
};

// Adds --blocksize, --double-quant and --torch-dtype to `cmd`.
void AddQuantModifierFlags(CLI::App* cmd, QuantFlags* flags);

// The QuantConfig of one TYPE or variant-key value of `flag` ("--quantize"). "none" gives
// type kNone.
absl::StatusOr<quant::QuantConfig> ParseQuantFlag(const std::string& flag,
                                                  const std::string& value,
                                                  const QuantFlags& modifiers);

}  // namespace loadstar::cli
