// LoadQuantized: loads a stored model under a quant::QuantConfig (SPEC §5 "quantize while
// streaming", §4 "quantized artifacts"). When the store holds the variant
// config.VariantKey() made with the same config (and torch_dtype), its quantized bytes are
// read directly (source "artifact"); otherwise the checkpoint is read and quantized while
// it streams (QuantizeTransformProvider; source "checkpoint"). Either way the tensor
// table holds the HF state-dict tensors (weight, absmax, quant_map, ... / int8 + SCB),
// byte-identical between the two paths, and every quantized weight carries its quant
// state as transform_info (AnnotateQuantState).
//
// Under tensor_parallel (more than one device) each shard is quantized (or cast) while
// streaming on its own blocks, as a tensor of its own; a stored variant, whose blocks span
// whole tensors, is not used.
//
// A QuantConfig of type none loads the checkpoint unchanged, or with its floating tensors
// cast to torch_dtype (QuantizedLoadOptions::cast_to_torch_dtype).
//
// Thread safety: as LoadPipeline::Load.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loader/load_pipeline.h"
#include "quant/policy.h"
#include "store/prequant_info.h"
#include "store/store.h"

namespace loadstar::loader {

struct QuantizedLoadOptions {
  // Use a stored variant when one matches; off: always quantize while streaming.
  bool use_artifact = true;
  int quantize_threads = 1;  // per tensor; the pipeline's workers run tensors in parallel
  // Quantization none: cast floating tensors to config.torch_dtype while streaming (the
  // deployment named a torch_dtype); off, they load as stored.
  bool cast_to_torch_dtype = false;
};

struct QuantizedLoad {
  std::unique_ptr<LoadedModel> model;
  std::string source;            // "artifact" | "checkpoint"
  std::string variant;           // the variant key read ("" for the checkpoint)
  uint64_t quantized_bytes = 0;  // bytes resident after quantization (tensor table sum)
  // Weights that LoadQuantized's quantize-while-streaming path (source "checkpoint" of an
  // fp16/bf16/fp32 model) quantized on their device rather than the CPU: CUDA devices
  // quantize on the GPU (QuantizeTransformProvider). Not counted by LoadPrequantized.
  int device_quantized_tensors = 0;
};

// The key of the stored variant usable for `config`, or "" when there is none.
std::string MatchingVariant(const store::Store& store, const std::string& name,
                            const quant::QuantConfig& config);
// The same variant's manifest (read once: LoadQuantized loads from it without parsing
// it again), or nullopt.
std::optional<store::Manifest> MatchingVariantManifest(const store::Store& store,
                                                       const std::string& name,
                                                       const quant::QuantConfig& config);

// Pre-quantized checkpoints (store/prequant_info.h: a stored GGUF file, GPTQ or AWQ
// directory): `keep` (config.keep_prequantized, and the
// default for GPTQ/AWQ when config.unspecified) loads the packed tensors as stored with
// their format in transform_info (AnnotatePrequant / AnnotateGptq); otherwise they are
// dequantized to torch_dtype while streaming (type none; the default for GGUF) or
// dequantized and quantized bnb-exact (nf4|fp4|int8), through PrequantTransformProvider
// (GGUF) or GptqTransformProvider. A saved bitsandbytes directory loads as stored under
// its own quantization, keep, or none named; any other (none included) is dequantized as
// transformers' dequantize() does and cast or quantized again (BnbTransformProvider).
// Source is "checkpoint".
absl::StatusOr<QuantizedLoad> LoadQuantized(
    LoadPipeline& pipeline, const store::Store& store, const std::string& name,
    const quant::QuantConfig& config, const std::vector<Device*>& devices,
    const PlanOptions& plan_options, const QuantizedLoadOptions& options = {},
    const CancellationToken* cancel = nullptr, const LoadProgressCallback& progress = {},
    LoadStats* stats = nullptr);

// What LoadQuantized would do over `num_devices` devices, without reading any tensor: the
// source it would read and the plan (LoadPlan::device_bytes is the exact allocation each
// device gets: quantized sizes, quant state, casts, shards, alignment). Fails as that load
// would before reading: a refused combination (FAILED_PRECONDITION), a tensor no layer-map
// prefix covers or a shard split that does not divide (INVALID_ARGUMENT), a max_memory cap
// exceeded (RESOURCE_EXHAUSTED). The scheduler prices placement with it (exact footprint).
struct QuantizedLoadPlan {
  LoadPlan plan;
  std::string source;   // "artifact" | "checkpoint"
  std::string variant;  // the variant key it would read ("" for the checkpoint)
};
absl::StatusOr<QuantizedLoadPlan> PlanQuantized(const store::Store& store,
                                                const std::string& name,
                                                const quant::QuantConfig& config,
                                                int num_devices, const PlanOptions& plan_options,
                                                const QuantizedLoadOptions& options = {});

}  // namespace loadstar::loader
