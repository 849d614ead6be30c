// BnbTransformProvider: serves a saved bitsandbytes checkpoint (store/bnb_checkpoint.h)
// under another quantization than the one it was saved with (SPEC §6.1
// `quantization: none | nf4 | fp4 | int8`), as a TransformProvider.
//
// Each quantized weight streams its packed bytes (4-bit codes or int8 rows); its small
// companions (absmax, quant_map, nested state, quant_state JSON; or SCB) are read from
// the store (checksums verified) when the weight begins. At the end the weight is
// dequantized as transformers' `model.dequantize()` does (bitsandbytes' dequantize_4bit
// into the quant_state dtype; int8 as `weight * SCB * (1/127)` in fp32), then cast to
// torch_dtype, or fed, as that tensor, to the bnb streaming quantizer
// (QuantizeTransformProvider). The companions load unchanged and ExpandTensors() drops
// them from the tensor table (their bytes stay in the allocation, unused), so the table is
// the HF state dict of the unquantized model, or of the newly quantized one. Every other
// floating tensor is cast to torch_dtype as QuantizeTransformProvider does.
//
// The stored quantization itself (or keep) does not use this provider: those load as
// stored.
//
// Thread safety: the provider is thread-safe (TransformProvider contract 4).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "loader/loaded_model.h"
#include "loader/quantize_transform.h"
#include "loader/tensor_transform.h"
#include "quant/policy.h"
#include "store/manifest.h"
#include "store/store.h"

namespace loadstar::loader {

class BnbTransformProvider : public TransformProvider {
 public:
  struct Options {
    const store::Store* store = nullptr;
    store::Manifest manifest;
    quant::QuantConfig config;  // what the deployment asks for
    std::string model_type;
  };
  // Reads every 4-bit weight's quant_state (its logical shape and dtype). DataLoss or
  // InvalidArgument naming the tensor when one is unreadable.
  static absl::StatusOr<std::unique_ptr<BnbTransformProvider>> Create(Options options);

  std::optional<TransformedTensor> Plan(const store::ManifestTensor& tensor) override;
  absl::StatusOr<std::unique_ptr<TensorTransform>> Begin(
      const store::ManifestTensor& tensor, const TransformedTensor& output) override;

  // REQUIRES: the load that used this provider succeeded.
  absl::Status ExpandTensors(LoadedModel& model) const;

 private:
  // A quantized weight of the checkpoint: the tensor it dequantizes to.
  struct Weight {
    bool four_bit = false;
    DType dtype = DType::kF32;  // bnb's dequantization output (quant_state dtype; int8: fp32)
    std::vector<int64_t> shape;
  };
  BnbTransformProvider(Options options, std::map<std::string, Weight> weights);
  store::ManifestTensor Logical(const store::ManifestTensor& packed, const Weight& w) const;

  const Options options_;
  const std::map<std::string, Weight> weights_;  // by weight name
  QuantizeTransformProvider quantize_;           // casts (type none) or quantizes
};

}  // namespace loadstar::loader
