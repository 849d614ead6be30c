// LoadPlan: where every tensor of a model goes. A pure function of the manifest, the
// number of devices, their memory limits and the placement policy, so placement is tested
// without loading anything. Each device gets one allocation holding its tensors, each at
// an offset aligned to PlanOptions::alignment.
//
// Placements (SPEC §5):
//  - kSingle: everything on device 0.
//  - kAuto (device_map: auto): whole transformer blocks per device, contiguous in layer
//    order, balanced by bytes within each device's limit. Blocks are recognised by a
//    layer prefix ("model.layers.<i>.", "h.<i>.", "encoder.layer.<i>.", "blocks.<i>.");
//    embeddings go to the first device, every other non-layer tensor (final norm,
//    lm_head) to the last.
//  - kCustom (device_map {layer-prefix: gpu}): each tensor on the device of the longest
//    prefix covering it (accelerate: "model.layers.1" covers "model.layers.1.mlp.w" and
//    "model.layers.1", not "model.layers.10..."; "" covers everything). A tensor no
//    prefix covers is InvalidArgument naming it.
//  - kTensorParallel: every device holds a shard of every weight: column-parallel
//    (q/k/v/gate/up/fc1/query/key/value/c_attn-style "in" projections) split on dim 0,
//    row-parallel (o_proj/down_proj/fc2/dense/out_proj) on dim 1, embeddings and lm_head by
//    vocab rows (dim 0), anything else (norms, biases of row-parallel layers) replicated.
//    A dimension that does not divide evenly is an InvalidArgument error naming the
//    tensor.
// With max_memory, kAuto fills devices in order, each up to its cap (accelerate's
// infer_auto_device_map with max_memory); without, it balances bytes over the devices.
// A device over its cap is RESOURCE_EXHAUSTED naming backend_config.max_memory.<gpu>
// and the bytes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "store/manifest.h"

namespace loadstar::loader {

class TransformProvider;
struct SpreadOptions;  // loader/spread.h

enum class Placement { kSingle, kAuto, kTensorParallel, kCustom };

// Parses "single" | "auto" | "tensor_parallel" | "custom".
absl::StatusOr<Placement> ParsePlacement(const std::string& name);

struct PlanOptions {
  Placement placement = Placement::kSingle;
  // Per-device byte limits (max_memory); empty: unlimited. Otherwise one per device.
  std::vector<uint64_t> max_memory;
  // kCustom: (layer prefix, device index) pairs; prefixes are distinct.
  std::vector<std::pair<std::string, int>> layer_map;
  // Offset alignment of tensors inside an allocation: a power of two >= 256. The default
  // 4 KiB lets O_DIRECT reads land in place on host devices.
  uint64_t alignment = 4096;
  // Optional per-tensor transform (quantize-while-streaming). Under kTensorParallel each
  // shard is planned (and later transformed) on its own (tensor_transform.h contract 5).
  TransformProvider* transform = nullptr;
  // How a multi-device load moves its bytes (loader/spread.h); nullptr: per device. Not
  // part of the plan (placement is the same either way): LoadPipeline::Load passes it on.
  const SpreadOptions* spread = nullptr;
  // When LoadPipeline has a HostCache and reads this model from disk, keep its verified
  // source bytes in the cache (load_pipeline.h "Admission"). Off: the load leaves the
  // cache as it was. Not part of the plan either.
  bool admit_to_cache = true;
};

// How a shard's bytes are cut out of the source tensor.
enum class ShardKind {
  kWhole,       // the whole tensor (no sharding, or replicated)
  kRows,        // split on dim 0: a contiguous byte range
  kColumns,     // split on dim 1: a strided slice of every row
};

struct PlannedTensor {
  int source = 0;  // index into Manifest::tensors
  std::string name;
  // Output (after transform and sharding).
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;
  int device = 0;
  uint64_t offset = 0;  // inside the device's allocation
  uint64_t size = 0;
  bool transformed = false;
  std::string transform_info;
  // Tensor parallelism: this is shard `shard` of `num_shards` of the source tensor.
  ShardKind shard_kind = ShardKind::kWhole;
  int shard = 0;
  int num_shards = 1;
};

struct LoadPlan {
  int num_devices = 0;
  // Allocation size per device (0: the device holds nothing), including alignment padding
  // and the 4 KiB round-up that in-place O_DIRECT reads of the last tensor need.
  std::vector<uint64_t> device_bytes;
  // In manifest order; under kTensorParallel a source tensor has one entry per device.
  std::vector<PlannedTensor> tensors;
  uint64_t source_bytes = 0;  // bytes read from the store
};

absl::StatusOr<LoadPlan> MakeLoadPlan(const store::Manifest& manifest, int num_devices,
                                      const PlanOptions& options);

// Shard `kind` of `num_shards` of `tensor` as a tensor of its own: the split dimension
// divided (REQUIRES: it divides), the size divided; name, dtype and file position kept.
// kWhole returns the tensor unchanged.
store::ManifestTensor ShardTensor(const store::ManifestTensor& tensor, ShardKind kind,
                                  int num_shards);

// The layer prefix of a tensor name ("model.layers.3."), or "" when it is in no block.
std::string LayerPrefix(const std::string& tensor_name);

}  // namespace loadstar::loader
