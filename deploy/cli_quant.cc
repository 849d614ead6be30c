#include "deploy/cli_quant.h"

#include <fmt/format.h>

#include <vector>

#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace loadstar::cli {

namespace {

absl::Status CheckBlocksize(const std::string& what, int blocksize) {
  if (blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1)) != 0) {
    return absl::InvalidArgumentError(
        fmt::format("{} {}: the blocksize must be a power of two in 32..4096", what, blocksize));
  }
  return absl::OkStatus();
}

}  // namespace

void AddQuantModifierFlags(CLI::App* cmd, QuantFlags* flags) {
  cmd->add_option("--blocksize", flags->blocksize,
                  "4-bit blocksize, a power of two in 32..4096 (default 64)");
  cmd->add_flag("--double-quant", flags->double_quant,
                "4-bit: quantize the absmax too (bnb_4bit_use_double_quant)");
  cmd->add_option("--torch-dtype", flags->torch_dtype,
                  "dtype of unquantized tensors: float16 (default), bfloat16, float32");
}

absl::StatusOr<quant::QuantConfig> ParseQuantFlag(const std::string& flag,
                                                  const std::string& value,
                                                  const QuantFlags& modifiers) {
  // Split a variant key "nf4-bs128-dq" into its type and suffixes; the TGI shorthands
  // ("bitsandbytes-nf4") contain a dash too, so try the whole value first.
  std::string type = value;
  int blocksize = modifiers.blocksize;
  bool double_quant = modifiers.double_quant;
  bool keyed = false;
  absl::StatusOr<quant::QuantConfig> whole = quant::ParseQuantizationShorthand(value, flag);
  if (!whole.ok()) {
    // A key names the whole config: the modifier flags do not apply to it.
    std::vector<std::string> parts = absl::StrSplit(value, '-');
    type = parts[0];
    blocksize = 0;
    double_quant = false;
    for (size_t i = 1; i < parts.size(); ++i) {
      const std::string& p = parts[i];
      if (p == "dq") {
        double_quant = true;
      } else if (p.size() > 2 && p.rfind("bs", 0) == 0 &&
                 p.find_first_not_of("0123456789", 2) == std::string::npos && p.size() < 8) {
        blocksize = std::stoi(p.substr(2));
      } else {
        return absl::InvalidArgumentError(fmt::format(
            "{} {}: expected nf4, fp4, int8 or a variant key like nf4-bs64-dq", flag, value));
      }
    }
    keyed = true;
  }
  ASSIGN_OR_RETURN(quant::QuantConfig config, quant::ParseQuantizationShorthand(type, flag));
  ASSIGN_OR_RETURN(config.torch_dtype, quant::ParseTorchDtype(modifiers.torch_dtype,
                                                              "--torch-dtype"));
  const bool four_bit =
      config.type == quant::QuantType::kNf4 || config.type == quant::QuantType::kFp4;
  if (blocksize != 0) {
    RETURN_IF_ERROR(CheckBlocksize(keyed ? fmt::format("{} {}:", flag, value) : "--blocksize",
                                   blocksize));
    if (!four_bit && keyed) {
      return absl::InvalidArgumentError(
          fmt::format("{} {}: a blocksize applies to nf4 and fp4 only", flag, value));
    }
    if (four_bit) config.blocksize = blocksize;
  }
  if (double_quant && four_bit) config.double_quant = true;
  if (double_quant && !four_bit && keyed) {
    return absl::InvalidArgumentError(
        fmt::format("{} {}: double quant applies to nf4 and fp4 only", flag, value));
  }
  return config;
}

}  // namespace loadstar::cli
