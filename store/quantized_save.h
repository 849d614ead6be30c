// `loadstar store save SRC --name NAME --quantize nf4 ...` in one pass (issue 14 item 4,
// SPEC §8 "save"): the checkpoint is copied into the store and, from the same bytes as
// they pass (store/one_pass_writer.h), quantized into a variant per config, written at
// the same time; nothing is read back from the stored copy. The variants are byte for
// byte what SaveQuantizedVariant writes of the stored model afterwards (the same
// QuantizedInputs, each weight quantized once, a double-quant quant_state sized at
// write), and they commit with the model (Store::SaveWithVariants): if anything fails,
// neither the model nor any variant is visible.
//
// `store quantize` of a model already stored keeps SaveQuantizedVariant.
//
// Thread safety: free functions, as Store::SaveWithVariants.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/policy.h"
#include "store/one_pass_writer.h"
#include "store/quantized_artifact.h"
#include "store/store.h"

namespace loadstar::store {

// The variant under `config` (key config.VariantKey(), quantization_json
// config.ToHfJson()) made in the pass. InvalidArgument, before anything is written, for
// type none and for a pre-quantized source (GGUF, GPTQ/AWQ, saved bitsandbytes).
// `stats`, when given, counts the quantizations (read after the save).
InPassVariant QuantizedInPassVariant(const quant::QuantConfig& config,
                                     QuantizedInputsStats* stats = nullptr);

// Store::SaveWithVariants of `src_dir` as `name` with one quantized variant per config
// (every config in the same pass; a key given twice is InvalidArgument). `stats`, when
// given, gets one entry per config.
absl::StatusOr<ModelWithVariants> SaveQuantized(Store& store, const std::string& src_dir,
                                                const std::string& name,
                                                const std::vector<quant::QuantConfig>& configs,
                                                const ProgressCallback& progress = {},
                                                const SaveOptions& options = {},
                                                std::vector<QuantizedInputsStats>* stats =
                                                    nullptr);

}  // namespace loadstar::store
