#include "loader/quantized_load.h"

#include <fmt/format.h>

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

std::string MatchingVariant(const store::Store& store, const std::string& name,
                            const quant::QuantConfig& config) {
  if (config.type == quant::QuantType::kNone) return "";
  const std::string key = config.VariantKey();
  absl::StatusOr<store::Manifest> m = store.GetManifest(name, key);
  if (!m.ok()) return "";
  // The key fixes type, blocksize and double quant; of the rest only what changes the
  // bytes must match (not compute_dtype or the int8 threshold): the skipped modules here,
  // torch_dtype below.
  nlohmann::json q = nlohmann::json::parse(m->quantization_json, nullptr, false);
  if (!q.is_object()) return "";
  absl::StatusOr<quant::QuantConfig> stored = quant::ParseQuantizationConfig(q);
  if (!stored.ok() || stored->type != config.type || stored->skip_modules != config.skip_modules) {
    return "";
  }
  // Unquantized floating tensors must already be in torch_dtype.
  for (const store::ManifestTensor& t : m->tensors) {
    bool floating = t.dtype == DType::kF32 || t.dtype == DType::kF16 || t.dtype == DType::kBF16;
    if (floating && t.dtype != config.torch_dtype && !quant::IsQuantStateTensorName(t.name) &&
        !t.name.ends_with(".SCB")) {
      return "";
    }
  }
  return key;
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
  QuantizedLoad out;
  out.source = "checkpoint";
  ASSIGN_OR_RETURN(std::optional<store::PrequantInfo> prequant,
                   store::ReadPrequantInfo(store, name));
  if (prequant) {
    return LoadPrequantized(pipeline, store, name, *prequant, config, devices, plan_options,
                            options, cancel, progress, stats);
  }
  // A stored variant's blocks span whole tensors; tensor-parallel shards are quantized on
  // their own blocks (each shard as its own tensor), so they always stream.
  const bool tensor_parallel = plan_options.placement == Placement::kTensorParallel &&
                               devices.size() > 1;
  if (config.type != quant::QuantType::kNone && options.use_artifact && !tensor_parallel) {
    out.variant = MatchingVariant(store, name, config);
  }
  bool cast = false;
  if (config.type == quant::QuantType::kNone && options.cast_to_torch_dtype) {
    ASSIGN_OR_RETURN(store::Manifest manifest, store.GetManifest(name));
    for (const store::ManifestTensor& t : manifest.tensors) {
      bool floating = t.dtype == DType::kF32 || t.dtype == DType::kF16 || t.dtype == DType::kBF16;
      cast |= floating && t.dtype != config.torch_dtype;
    }
  }
  if ((config.type == quant::QuantType::kNone && !cast) || !out.variant.empty()) {
    ASSIGN_OR_RETURN(ModelSource source, ModelSourceFromStore(store, name, out.variant));
    PlanOptions plan = plan_options;
    plan.transform = nullptr;
    ASSIGN_OR_RETURN(out.model, pipeline.Load(source, devices, plan, cancel, progress, stats));
    if (!out.variant.empty()) {
      out.source = "artifact";
      AnnotateQuantState(*out.model);
    }
    out.quantized_bytes = out.model->tensor_bytes();
    return out;
  }
  ASSIGN_OR_RETURN(ModelSource source, ModelSourceFromStore(store, name));
  QuantizeTransformProvider provider({.config = config,
                                      .model_type = store::StoredModelType(store, name),
                                      .quantize_threads = options.quantize_threads});
  PlanOptions plan = plan_options;
  plan.transform = &provider;
  ASSIGN_OR_RETURN(out.model, pipeline.Load(source, devices, plan, cancel, progress, stats));
  RETURN_IF_ERROR(provider.ExpandTensors(*out.model));
  out.quantized_bytes = out.model->tensor_bytes();
  out.device_quantized_tensors = provider.device_quantized_tensors();
  return out;
}

absl::StatusOr<QuantizedLoad> LoadPrequantized(
    LoadPipeline& pipeline, const store::Store& store, const std::string& name,
    const store::PrequantInfo& info, const quant::QuantConfig& config,
    const std::vector<Device*>& devices, const PlanOptions& plan_options,
    const QuantizedLoadOptions& options, const CancellationToken* cancel,
    const LoadProgressCallback& progress, LoadStats* stats) {
  QuantizedLoad out;
  out.source = "checkpoint";
  ASSIGN_OR_RETURN(ModelSource source, ModelSourceFromStore(store, name));
  PlanOptions plan = plan_options;
  if (info.format == "bitsandbytes") {
    // Already in the bnb state-dict layout: served as stored, when asked for as stored.
    ASSIGN_OR_RETURN(quant::QuantConfig stored,
                     quant::ParseQuantizationConfig(
                         nlohmann::json::parse(info.quantization_json, nullptr, false)));
    const bool same = config.type == stored.type &&
                      (stored.type == quant::QuantType::kInt8 ||
                       (config.blocksize == stored.blocksize &&
                        config.double_quant == stored.double_quant));
    if (!config.keep_prequantized && !config.unspecified && !same) {
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
                       BnbTransformProvider::Create(
                           {.store = &store,
                            .manifest = source.manifest,
                            .config = config,
                            .model_type = store::StoredModelType(store, name)}));
      plan.transform = bnb.get();
      ASSIGN_OR_RETURN(out.model, pipeline.Load(source, devices, plan, cancel, progress, stats));
      RETURN_IF_ERROR(bnb->ExpandTensors(*out.model));
      out.quantized_bytes = out.model->tensor_bytes();
      return out;
    }
    plan.transform = nullptr;
    ASSIGN_OR_RETURN(out.model, pipeline.Load(source, devices, plan, cancel, progress, stats));
    AnnotateQuantState(*out.model);
    out.quantized_bytes = out.model->tensor_bytes();
    return out;
  }
  // No quantization named: GGUF is dequantized (as transformers does), GPTQ/AWQ are served
  // as stored (as TGI does).
  if (config.keep_prequantized || (config.unspecified && info.format != "gguf")) {
    plan.transform = nullptr;
    ASSIGN_OR_RETURN(out.model, pipeline.Load(source, devices, plan, cancel, progress, stats));
    if (info.format == "gguf") {
      AnnotatePrequant(*out.model, info);
    } else {
      AnnotateGptq(*out.model, info);
    }
    out.quantized_bytes = out.model->tensor_bytes();
    return out;
  }
  if (plan_options.placement == Placement::kTensorParallel) {
    return absl::FailedPreconditionError(fmt::format(
        "model {} is a pre-quantized {} checkpoint: dequantizing it while streaming does not "
        "combine with tensor_parallel placement; deploy it with quantization keep or one GPU",
        name, info.format));
  }
  if (info.format != "gguf") {
    GptqTransformProvider gptq({.store = &store,
                                .manifest = source.manifest,
                                .info = info,
                                .config = config,
                                .model_type = store::StoredModelType(store, name)});
    plan.transform = &gptq;
    ASSIGN_OR_RETURN(out.model, pipeline.Load(source, devices, plan, cancel, progress, stats));
    RETURN_IF_ERROR(gptq.ExpandTensors(*out.model));
    out.quantized_bytes = out.model->tensor_bytes();
    return out;
  }
  PrequantTransformProvider provider({.info = info,
                                      .config = config,
                                      .model_type = store::StoredModelType(store, name),
                                      .threads = options.quantize_threads});
  plan.transform = &provider;
  ASSIGN_OR_RETURN(out.model, pipeline.Load(source, devices, plan, cancel, progress, stats));
  RETURN_IF_ERROR(provider.ExpandTensors(*out.model));
  out.quantized_bytes = out.model->tensor_bytes();
  return out;
}

}  // namespace loadstar::loader
