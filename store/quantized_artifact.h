// Quantized artifacts of stored models (SPEC §4 "Quantized artifacts", §6 serialization):
// the tensors a stored checkpoint becomes under a quant::QuantConfig, in the HF /
// bitsandbytes state-dict layout (quant/quant_state.h), streamed source tensor by source
// tensor so that at most one source tensor and its quantized outputs are in memory.
//
//   SaveQuantizedVariant   writes them as the variant <model>/variants/<VariantKey()>/
//                          (Store::WriteVariant; quantization_json = config.ToHfJson()).
//   QuantizedInputs        the same tensors as store::TensorInputs, for any writer (the
//                          HF export writes them to safetensors).
//   StoredInputs           the tensors of a stored manifest (a variant) as TensorInputs,
//                          read from its data files with their checksums verified.
//   QuantizedInputsFrom    the same as QuantizedInputs from source bytes handed over by
//                          another writer (the one-pass `store save --quantize`,
//                          store/quantized_save.h).
//
// Tensor order: the source manifest's order; each source tensor expands in place into
// its state-dict entries (weight, absmax, quant_map, [nested_absmax, nested_quant_map],
// quant_state for 4-bit; weight, SCB, weight_format for int8; a cast copy otherwise).
//
// A tensor the config leaves as it is (not quantized, not cast) is written from the
// source's bytes (SourceTensorBytes::GetPrefix) without a PrepareTensor copy: the same
// bytes.
//
// Double quant: the quant_state JSON holds the nested offset (the mean of the absmax),
// so its length is known only after quantizing. WriteModelDir (SaveQuantizedVariant)
// takes that size when it reaches the quant_state (TensorInput::shape_at_write), right
// after the weight's other outputs: each weight is quantized once. A safetensors header
// (the HF export) needs every size first, so there the weights are quantized twice (a
// sizing pass keeps only the JSON length; StateSizing::kUpFront).
//
// Thread safety: free functions; the TensorInputs returned share state and must be
// consumed in order by one writer (as WriteVariant / WriteSafetensors do).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/policy.h"
#include "quant/prepare.h"
#include "store/manifest.h"
#include "store/store.h"
#include "store/tensor.h"

namespace loadstar::store {

// "model_type" of the stored model's config.json ("" when absent or unreadable): decides
// whether GPT-2-style Conv1D weights are transposed before quantizing.
std::string StoredModelType(const Store& store, const std::string& name);

// The same from config.json's text.
std::string ModelTypeOfConfig(std::string_view config_json);

// InvalidArgument: the pre-quantized (`format`: gguf, gptq, ...) `model` cannot be given a
// stored variant under `config`.
absl::Status PrequantizedModelError(std::string_view model, std::string_view format,
                                    const quant::QuantConfig& config);

// The bytes of one tensor of a stored manifest (model or variant), checksums verified
// (DataLoss naming the tensor on a mismatch).
absl::StatusOr<std::string> ReadStoredTensor(const Store& store, const Manifest& manifest,
                                             const ManifestTensor& tensor);

// PrepareTensor on one stored tensor (Conv1D transposition from `model_type`).
absl::StatusOr<quant::PreparedTensor> PrepareStoredTensor(const Store& store,
                                                          const Manifest& manifest,
                                                          const ManifestTensor& tensor,
                                                          const quant::QuantConfig& config,
                                                          std::string_view model_type);

// The state-dict tensors (name, dtype, shape) that `tensor` becomes under `config`.
// `quant_state_bytes` is the length of a 4-bit weight's quant_state JSON (only needed
// with double quant; QuantStateJsonBytes gives it otherwise).
std::vector<TensorSpec> QuantizedTensorSpecs(const quant::QuantConfig& config,
                                             std::string_view model_type,
                                             const ManifestTensor& tensor,
                                             int64_t quant_state_bytes);

// Length of the quant_state JSON of a 4-bit weight of `shape` under `config`; with
// double quant, `nested_offset` is the offset its JSON prints.
int64_t QuantStateJsonBytes(const quant::QuantConfig& config, const std::vector<int64_t>& shape,
                            float nested_offset = 0.0f);

// When a double-quant quant_state's length is found (see the file comment): kUpFront by
// a sizing pass (every spec exact; any writer), kAtWrite by TensorInput::shape_at_write
// (one quantization per weight; WriteModelDir only).
enum class StateSizing { kUpFront, kAtWrite };

// How many times QuantizedInputs' tensors were quantized (quant::PrepareTensor calls):
// by the sizing pass, and by the fillers (a function: read it after the write; it also
// counts the tensors the fillers pass through unchanged, which need no PrepareTensor:
// once per non-empty source tensor when each is prepared once).
struct QuantizedInputsStats {
  int64_t sizing_quantizations = 0;
  std::function<int64_t()> fill_quantizations;
};

// The model's tensors quantized under `config`, streamed (see the file comment).
// `model_type` as StoredModelType. `stats`, when given, counts quantizations.
absl::StatusOr<std::vector<TensorInput>> QuantizedInputs(
    const Store& store, const Manifest& manifest, const quant::QuantConfig& config,
    std::string_view model_type, StateSizing sizing = StateSizing::kUpFront,
    QuantizedInputsStats* stats = nullptr);

// Where QuantizedInputsFrom's fillers get the bytes of the source tensors.
class SourceTensorBytes {
 public:
  virtual ~SourceTensorBytes() = default;
  // The bytes of source tensor `index` (all of them), valid until Release(index) or the
  // next Get. Called from the writer's thread, for increasing indices.
  virtual absl::StatusOr<std::string_view> Get(size_t index) = 0;
  // At least the first `end` bytes of tensor `index` (a tensor passed through unchanged
  // is copied piece by piece, so a source that streams can answer before the whole
  // tensor arrived). Called repeatedly with growing `end`; by default Get(index).
  virtual absl::StatusOr<std::string_view> GetPrefix(size_t index, uint64_t end) {
    (void)end;
    return Get(index);
  }
  // The fillers no longer need tensor `index`'s bytes (its outputs are held apart).
  virtual void Release(size_t index) { (void)index; }
};

// QuantizedInputs of the source `tensors` (name, dtype, shape; in the variant's order)
// whose bytes come from `bytes`, a double-quant quant_state sized at write
// (StateSizing::kAtWrite: for WriteModelDir). No pre-quantized check: the caller's.
absl::StatusOr<std::vector<TensorInput>> QuantizedInputsFrom(
    std::vector<ManifestTensor> tensors, const quant::QuantConfig& config,
    std::string_view model_type, std::shared_ptr<SourceTensorBytes> bytes,
    QuantizedInputsStats* stats = nullptr);

// The tensors of `manifest` as stored (e.g. a quantized variant), streamed from its data
// files and verified against its checksums.
std::vector<TensorInput> StoredInputs(const Store& store, const Manifest& manifest);

// Quantizes stored model `name` under `config` and writes the variant
// <name>/variants/<config.VariantKey()>/ (AlreadyExists unless `overwrite`).
// InvalidArgument when config.type is kNone. Returns the variant's manifest.
absl::StatusOr<Manifest> SaveQuantizedVariant(Store& store, const std::string& name,
                                              const quant::QuantConfig& config,
                                              const ProgressCallback& progress = {},
                                              bool overwrite = false,
                                              QuantizedInputsStats* stats = nullptr);

}  // namespace loadstar::store
