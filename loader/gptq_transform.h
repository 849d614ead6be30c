// GptqTransformProvider: serves a stored GPTQ or AWQ checkpoint dequantized while it
// streams (SPEC §6.1 `quantization: none | nf4 | fp4 | int8`), as a TransformProvider.
//
// Each packed Linear layer (store/prequant_info.h PrequantLinear) streams its qweight;
// its small companions (qzeros, scales, g_idx) are read from the store (checksums
// verified) when the qweight begins. The qweight is buffered (its columns are the output
// rows), dequantized at the end (quant/gptq_awq.h) to the fp32 [out, in] weight, then cast
// to torch_dtype or fed to the bnb streaming quantizer (QuantizeTransformProvider). The
// companions load unchanged; ExpandTensors() then renames `<m>.qweight` to `<m>.weight`
// and drops them from the tensor table (their bytes stay in the allocation, unused), so the
// table is the HF state dict transformers builds for the unquantized model. Every other
// floating tensor is cast to torch_dtype (or quantized) as QuantizeTransformProvider does.
//
// `keep` does not use this provider: AnnotateGptq() puts each qweight's format into the
// tensor table.
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
#include "store/manifest.h"
#include "store/prequant_info.h"
#include "store/store.h"

namespace loadstar::loader {

class GptqTransformProvider : public TransformProvider {
 public:
  struct Options {
    const store::Store* store = nullptr;
    store::Manifest manifest;
    store::PrequantInfo info;
    quant::QuantConfig config;
    std::string model_type;
  };
  explicit GptqTransformProvider(Options options);

  std::optional<TransformedTensor> Plan(const store::ManifestTensor& tensor) override;
  absl::StatusOr<std::unique_ptr<TensorTransform>> Begin(
      const store::ManifestTensor& tensor, const TransformedTensor& output) override;

  // REQUIRES: the load that used this provider succeeded.
  absl::Status ExpandTensors(LoadedModel& model) const;

 private:
  store::ManifestTensor Logical(const store::ManifestTensor& qweight, const std::string& module,
                                const store::PrequantLinear& l) const;

  const Options options_;
  QuantizeTransformProvider quantize_;  // casts (type none) or quantizes
};

// `keep`: each qweight's transform_info becomes {"format": "gptq"|"awq", "bits", "in",
// "out", "group_size", "g_idx", "checkpoint_format"}.
void AnnotateGptq(LoadedModel& model, const store::PrequantInfo& info);

}  // namespace loadstar::loader
