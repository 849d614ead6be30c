// PrequantTransformProvider: serves a stored pre-quantized (GGUF) checkpoint dequantized
// while it streams (SPEC §6.1 `quantization: none | nf4 | fp4 | int8`), as a
// TransformProvider (tensor_transform.h).
//
// Every tensor listed in the model's prequant.json (store/prequant_info.h) is unpacked
// chunk by chunk by a quant::GgmlRowStream (fp32, rows in HF order), then
//   - none:            cast to torch_dtype (one RNE rounding from fp32, as transformers'
//                      dequantize-then-.to(torch_dtype)) and written in place;
//   - nf4|fp4|int8:    fed, as the fp32 tensor it dequantizes to, to the
//                      QuantizeTransformProvider's transform for that tensor (bnb-exact
//                      streaming quantization of the torch_dtype values; the load then
//                      needs ExpandTensors like any quantized load).
// A tensor whose stored bytes already are the answer (an F16 tensor, torch_dtype F16, no
// row permutation, not quantized) loads unchanged.
//
// `keep` does not use this provider: the stored packed tensors load as they are and
// AnnotatePrequant() puts their format into the tensor table.
//
// Thread safety: the provider is thread-safe (TransformProvider contract 4).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "loader/loaded_model.h"
#include "loader/quantize_transform.h"
#include "loader/tensor_transform.h"
#include "quant/policy.h"
#include "store/prequant_info.h"

namespace loadstar::loader {

class PrequantTransformProvider : public TransformProvider {
 public:
  struct Options {
    store::PrequantInfo info;
    quant::QuantConfig config;  // type none: dequantize only
    std::string model_type;
    int threads = 1;  // dequantization threads per tensor
  };
  explicit PrequantTransformProvider(Options options);

  std::optional<TransformedTensor> Plan(const store::ManifestTensor& tensor) override;
  absl::StatusOr<std::unique_ptr<TensorTransform>> Begin(
      const store::ManifestTensor& tensor, const TransformedTensor& output) override;

  // After a quantizing load: the quantized regions become their state-dict tensors
  // (QuantizeTransformProvider::ExpandTensors). A no-op for type none.
  absl::Status ExpandTensors(LoadedModel& model) const;

 private:
  // The fp32 tensor `tensor` dequantizes to.
  store::ManifestTensor Logical(const store::ManifestTensor& tensor,
                                const store::PrequantTensor& p) const;
  bool LoadsUnchanged(const store::ManifestTensor& tensor, const store::PrequantTensor& p) const;

  const Options options_;
  std::unique_ptr<QuantizeTransformProvider> quantize_;  // null for type none
};

// `keep`: sets each packed tensor's transform_info to its format as JSON:
// {"format": "gguf", "ggml_type": "Q4_K", "shape": [...], "source_name": "...",
//  "permute_heads": N} (what an engine's GGUF kernels need to read the bytes).
void AnnotatePrequant(LoadedModel& model, const store::PrequantInfo& info);

}  // namespace loadstar::loader
