#include "store/quantized_save.h"

#include <memory>

#include "base/status_macros.h"

namespace loadstar::store {
namespace {

// The source bytes of QuantizedInputsFrom, from the copy's tap.
class TapBytes : public SourceTensorBytes {
 public:
  explicit TapBytes(TapReader reader) : reader_(std::move(reader)) {}
  absl::StatusOr<std::string_view> Get(size_t index) override { return reader_.Get(index); }
  absl::StatusOr<std::string_view> GetPrefix(size_t index, uint64_t end) override {
    return reader_.GetPrefix(index, end);
  }
  void Release(size_t index) override { reader_.Release(index); }

 private:
  TapReader reader_;
};

}  // namespace

InPassVariant QuantizedInPassVariant(const quant::QuantConfig& config,
                                     QuantizedInputsStats* stats) {
  InPassVariant variant;
  variant.key = config.VariantKey();
  variant.quantization_json = config.ToHfJson().dump();
  variant.make_tensors = [config, stats](const SaveSource& source, TapReader reader)
      -> absl::StatusOr<std::vector<TensorInput>> {
    if (config.type == quant::QuantType::kNone) {
      return absl::InvalidArgumentError("no quantization requested (type none)");
    }
    if (!source.prequant_format.empty()) {
      return PrequantizedModelError(source.name, source.prequant_format, config);
    }
    std::vector<ManifestTensor> tensors;
    for (const TensorSpec& spec : source.tensors) {
      ManifestTensor t;
      t.name = spec.name;
      t.dtype = spec.dtype;
      t.shape = spec.shape;
      t.size = TensorByteSize(spec.dtype, spec.shape).value_or(0);
      tensors.push_back(std::move(t));
    }
    return QuantizedInputsFrom(std::move(tensors), config,
                               ModelTypeOfConfig(source.config_json),
                               std::make_shared<TapBytes>(std::move(reader)), stats);
  };
  return variant;
}

absl::StatusOr<ModelWithVariants> SaveQuantized(Store& store, const std::string& src_dir,
                                                const std::string& name,
                                                const std::vector<quant::QuantConfig>& configs,
                                                const ProgressCallback& progress,
                                                const SaveOptions& options,
                                                std::vector<QuantizedInputsStats>* stats) {
  if (stats != nullptr) stats->assign(configs.size(), {});
  std::vector<InPassVariant> variants;
  for (size_t i = 0; i < configs.size(); ++i) {
    variants.push_back(
        QuantizedInPassVariant(configs[i], stats != nullptr ? &(*stats)[i] : nullptr));
  }
  return store.SaveWithVariants(src_dir, name, std::move(variants), progress, options);
}

}  // namespace loadstar::store
