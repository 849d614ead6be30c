#include "loader/quantized_load.h"

#include <fmt/format.h>

#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/status_macros.h"
#include "loader/bnb_transform.h"
#include "loader/model_source.h"
#include "loader/gptq_transform.h"
#include "loader/prequant_transform.h"
#include "loader/quantize_transform.h"
#include "quant/quant_state.h"
#include "store/prequant_info.h"
#include "store/quantized_artifact.h"

namespace loadstar::loader {

std::optional<store::Manifest> MatchingVariantManifest(const store::Store& store,
                                               const std::string& name,
                                               const quant::QuantConfig& config) {
  if (config.type == quant::QuantType::kNone) return std::nullopt;
  const std::string key = config.VariantKey();
  absl::StatusOr<store::Manifest> m = store.GetManifest(name, key);
  if (!m.ok()) return std::nullopt;
  // The key fixes type, blocksize and double quant; of the rest only what changes the
  // bytes must match (not compute_dtype or the int8 threshold): the skipped modules here,
  // torch_dtype below.
  nlohmann::json q = nlohmann::json::parse(m->quantization_json, nullptr, false);
  if (!q.is_object()) return std::nullopt;
  absl::StatusOr<quant::QuantConfig> stored = quant::ParseQuantizationConfig(q);
  if (!stored.ok() || stored->type != config.type || stored->skip_modules != config.skip_modules) {
    return std::nullopt;
  }
  // Unquantized floating tensors must already be in torch_dtype.
  for (const store::ManifestTensor& t : m->tensors) {
    bool floating = t.dtype == DType::kF32 || t.dtype == DType::kF16 || t.dtype == DType::kBF16;
    if (floating && t.dtype != config.torch_dtype && !quant::IsQuantStateTensorName(t.name) &&
        !t.name.ends_with(".SCB")) {
      return std::nullopt;
    }
  }
  return *std::move(m);
}

std::string MatchingVariant(const store::Store& store, const std::string& name,
                            const quant::QuantConfig& config) {
  std::optional<store::Manifest> m = MatchingVariantManifest(store, name, config);
  return m ? m->variant : "";
}

namespace {

// What a load under a QuantConfig reads and how it turns the bytes into the tensor table:
// chosen once from the store, then either planned (PlanQuantized) or loaded
// (LoadQuantized), so both see the same source, transform and allocation sizes.
struct Recipe {
  ModelSource source;
  std::string source_kind = "checkpoint";  // "artifact" | "checkpoint"
  std::string variant;
  std::unique_ptr<TransformProvider> transform;  // nullptr: the bytes load as stored
  QuantizeTransformProvider* quantize = nullptr;  // `transform` when it is one (GPU count)
  // After the load: the transform's ExpandTensors, or the annotation of bytes served as
  // stored (quant state, packed format). Never empty.
  std::function<absl::Status(LoadedModel&)> finish;
};

std::function<absl::Status(LoadedModel&)> Unchanged() {
  return [](LoadedModel&) { return absl::OkStatus(); };
}

template <typename Provider>
void UseTransform(Recipe& r, std::unique_ptr<Provider> provider) {
  Provider* p = provider.get();
  r.finish = [p](LoadedModel& m) { return p->ExpandTensors(m); };
  r.transform = std::move(provider);
}

absl::StatusOr<Recipe> PrequantRecipe(const store::Store& store, const std::string& name,
                                      const store::PrequantInfo& info,
                                      const quant::QuantConfig& config,
                                      const PlanOptions& plan_options,
                                      const QuantizedLoadOptions& options) {
  Recipe r;
  ASSIGN_OR_RETURN(r.source, ModelSourceFromStore(store, name));
  if (info.format == "bitsandbytes") {
    // Already in the bnb state-dict layout: served as stored, when asked for as stored.
    ASSIGN_OR_RETURN(quant::QuantConfig stored,
                     quant::ParseQuantizationConfig(
                         nlohmann::json::parse(info.quantization_json, nullptr, false)));
    const bool same = config.type == stored.type &&
                      (stored.type == quant::QuantType::kInt8 ||
                       (config.blocksize == stored.blocksize &&
                        config.double_quant == stored.double_quant));
    if (config.keep_prequantized || config.unspecified || same) {
      r.finish = [](LoadedModel& m) {
        AnnotateQuantState(m);
        return absl::OkStatus();
      };
      return r;
    }
    // Another quantization (or none): dequantized as transformers' dequantize() does,
    // then cast or quantized again while streaming.
    if (plan_options.placement == Placement::kTensorParallel) {
      return absl::FailedPreconditionError(fmt::format(
          "model {} is a saved bitsandbytes {} checkpoint: serving it as {} dequantizes it "
          "while streaming, which does not combine with tensor_parallel placement; deploy "
          "it with quantization keep or on one device",
          name, stored.VariantKey(), config.VariantKey()));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<BnbTransformProvider> bnb,
                     BnbTransformProvider::Create({.store = &store,
                                                   .manifest = r.source.manifest,
                                                   .config = config,
                                                   .model_type = store::StoredModelType(store, name)}));
    UseTransform(r, std::move(bnb));
    return r;
  }
  // No quantization named: GGUF is dequantized (as transformers does), GPTQ/AWQ are served
  // as stored (as TGI does).
  if (config.keep_prequantized || (config.unspecified && info.format != "gguf")) {
    r.finish = [info](LoadedModel& m) {
      if (info.format == "gguf") {
        AnnotatePrequant(m, info);
      } else {
        AnnotateGptq(m, info);
      }
      return absl::OkStatus();
    };
    return r;
  }
  if (plan_options.placement == Placement::kTensorParallel) {
    return absl::FailedPreconditionError(fmt::format(
        "model {} is a pre-quantized {} checkpoint: dequantizing it while streaming does not "
        "combine with tensor_parallel placement; deploy it with quantization keep or one GPU",
        name, info.format));
  }
  if (info.format != "gguf") {
    UseTransform(r, std::make_unique<GptqTransformProvider>(GptqTransformProvider::Options{
                        .store = &store,
                        .manifest = r.source.manifest,
                        .info = info,
                        .config = config,
                        .model_type = store::StoredModelType(store, name)}));
    return r;
  }
  UseTransform(r, std::make_unique<PrequantTransformProvider>(PrequantTransformProvider::Options{
                      .info = info,
                      .config = config,
                      .model_type = store::StoredModelType(store, name),
                      .threads = options.quantize_threads}));
  return r;
}

absl::StatusOr<Recipe> ChooseRecipe(const store::Store& store, const std::string& name,
                                    const quant::QuantConfig& config, int num_devices,
                                    const PlanOptions& plan_options,
                                    const QuantizedLoadOptions& options) {
  ASSIGN_OR_RETURN(std::optional<store::PrequantInfo> prequant,
                   store::ReadPrequantInfo(store, name));
  if (prequant) return PrequantRecipe(store, name, *prequant, config, plan_options, options);
  Recipe r;
  // A stored variant's blocks span whole tensors; tensor-parallel shards are quantized on
  // their own blocks (each shard as its own tensor), so they always stream.
  const bool tensor_parallel =
      plan_options.placement == Placement::kTensorParallel && num_devices > 1;
  std::optional<store::Manifest> variant;
  if (config.type != quant::QuantType::kNone && options.use_artifact && !tensor_parallel) {
    variant = MatchingVariantManifest(store, name, config);
    if (variant) r.variant = variant->variant;
  }
  bool cast = false;
  if (config.type == quant::QuantType::kNone && options.cast_to_torch_dtype) {
    ASSIGN_OR_RETURN(store::Manifest manifest, store.GetManifest(name));
    for (const store::ManifestTensor& t : manifest.tensors) {
      bool floating = t.dtype == DType::kF32 || t.dtype == DType::kF16 || t.dtype == DType::kBF16;
      cast |= floating && t.dtype != config.torch_dtype;
    }
  }
  if ((config.type == quant::QuantType::kNone && !cast) || !r.variant.empty()) {
    if (variant) {
      ASSIGN_OR_RETURN(r.source, ModelSourceFromManifest(store, *std::move(variant)));
    } else {
      ASSIGN_OR_RETURN(r.source, ModelSourceFromStore(store, name));
    }
    if (r.variant.empty()) {
      r.finish = Unchanged();
    } else {
      r.source_kind = "artifact";
      r.finish = [](LoadedModel& m) {
        AnnotateQuantState(m);
        return absl::OkStatus();
      };
    }
    return r;
  }
  ASSIGN_OR_RETURN(r.source, ModelSourceFromStore(store, name));
  auto provider = std::make_unique<QuantizeTransformProvider>(QuantizeTransformProvider::Options{
      .config = config,
      .model_type = store::StoredModelType(store, name),
      .quantize_threads = options.quantize_threads});
  r.quantize = provider.get();
  UseTransform(r, std::move(provider));
  return r;
}

}  // namespace

absl::StatusOr<QuantizedLoadPlan> PlanQuantized(const store::Store& store,
                                                const std::string& name,
                                                const quant::QuantConfig& config,
                                                int num_devices, const PlanOptions& plan_options,
                                                const QuantizedLoadOptions& options) {
  ASSIGN_OR_RETURN(Recipe r,
                   ChooseRecipe(store, name, config, num_devices, plan_options, options));
  PlanOptions plan = plan_options;
  plan.transform = r.transform.get();
  plan.spread = nullptr;
  QuantizedLoadPlan out;
  ASSIGN_OR_RETURN(out.plan, MakeLoadPlan(r.source.manifest, num_devices, plan));
  out.source = r.source_kind;
  out.variant = r.variant;
  return out;
}

absl::StatusOr<QuantizedLoad> LoadQuantized(LoadPipeline& pipeline, const store::Store& store,
                                            const std::string& name,
                                            const quant::QuantConfig& config,
                                            const std::vector<Device*>& devices,
                                            const PlanOptions& plan_options,
                                            const QuantizedLoadOptions& options,
                                            const CancellationToken* cancel,
                                            const LoadProgressCallback& progress,
                                            LoadStats* stats) {
  ASSIGN_OR_RETURN(Recipe r, ChooseRecipe(store, name, config, static_cast<int>(devices.size()),
                                          plan_options, options));
  PlanOptions plan = plan_options;
  plan.transform = r.transform.get();
  QuantizedLoad out;
  out.source = r.source_kind;
  out.variant = r.variant;
  ASSIGN_OR_RETURN(out.model, pipeline.Load(r.source, devices, plan, cancel, progress, stats));
  RETURN_IF_ERROR(r.finish(*out.model));
  out.quantized_bytes = out.model->tensor_bytes();
  if (r.quantize != nullptr) out.device_quantized_tensors = r.quantize->device_quantized_tensors();
  return out;
}

}  // namespace loadstar::loader
