// Saved bitsandbytes HF directories (SPEC §6.1 "bitsandbytes pre-quantized": as
// `loadstar store export` writes them and as transformers saves 4-bit / 8-bit models):
// config.json's quantization_config (quant_method bitsandbytes) and the check that the
// tensors are in the bnb state-dict layout (quant/quant_state.h) that config implies. Such
// a directory is stored with its tensors as they are (like a stored quantized variant)
// and served as stored under its own quantization (loader/bnb_transform.h dequantizes it
// for any other).
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

// prequant.json of the bnb checkpoint in `checkpoint`, or nullopt when its config.json
// has no quant_method bitsandbytes. InvalidArgument naming the file and the key or tensor:
// a bad quantization_config, a 4-bit weight without its absmax / quant_map / quant_state
// (or nested state with double quant), a quant_state of another type, an int8 weight
// without SCB, no quantized weight at all.
absl::StatusOr<std::optional<PrequantInfo>> MapBnbCheckpoint(Env* env,
                                                             const HfCheckpoint& checkpoint);

}  // namespace loadstar::store
