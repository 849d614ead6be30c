// GPTQ and AWQ Hugging Face directories (SPEC §6.1): the quantization_config (from
// config.json, or AutoGPTQ's quantize_config.json) and the check of every packed Linear
// layer against it, giving the prequant.json the loader dequantizes by
// (store/prequant_info.h, quant/gptq_awq.h).
//
// Accepted: quant_method gptq with bits 2/3/4/8, group_size > 0 or -1, desc_act (g_idx),
// sym, checkpoint_format gptq | gptq_v2; quant_method awq with bits 4 and version gemm.
// Refused with the file and the field named: any other bits / version / format
// (AWQ gemv, exllama, marlin ...), AWQ zero_point false, sym true with a qzeros entry that
// is not the symmetric zero point, and every layer whose tensors do not fit: qweight
// shape not matching bits x in_features, missing qzeros or scales, wrong dtypes or
// shapes, g_idx out of range.
//
// Thread safety: free functions.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "store/hf_checkpoint.h"
#include "store/prequant_info.h"

namespace loadstar::store {

struct GptqConfig {
  std::string method;  // gptq | awq
  int bits = 4;
  int64_t group_size = 128;  // -1: one group
  bool desc_act = false;
  bool v2 = false;          // checkpoint_format gptq_v2
  // GPTQ sym (AutoGPTQ's default true): every zero point is 2^(bits-1), which the save
  // checks in qzeros (stored as 2^(bits-1) - 1 by checkpoint_format gptq).
  bool sym = true;
  std::string source;       // the file it was read from (for messages)
};

// The GPTQ/AWQ config of directory `dir`, or nullopt when it has none. Errors name the
// file and the key.
absl::StatusOr<std::optional<GptqConfig>> ReadGptqConfig(Env* env, const std::string& dir);

// Checks every `<module>.qweight` of `checkpoint` and its companions; returns the
// prequant info (format = config.method) describing them.
absl::StatusOr<PrequantInfo> MapGptqCheckpoint(Env* env, const HfCheckpoint& checkpoint,
                                               const GptqConfig& config);

}  // namespace loadstar::store
