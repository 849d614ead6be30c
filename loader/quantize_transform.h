// QuantizeTransform: quantize-while-streaming (SPEC §5) as a TransformProvider
// (tensor_transform.h). Each checkpoint tensor that quant::ShouldQuantize picks is fed
// chunk by chunk to a quant::StreamingQuantizer (CPU) while the pipeline keeps reading
// other tensors; floating tensors that are not quantized are cast to torch_dtype chunk by
// chunk; anything else loads unchanged.
//
// A quantized weight becomes one reserved region on its device holding all of its HF
// state-dict tensors (quant/quant_state.h: weight, absmax, quant_map, nested state and
// quant_state JSON; or int8 weight, SCB, weight_format), each at a 256-byte-aligned
// offset. The region's size is fixed at plan time, but with double quant the JSON's
// length depends on the nested offset, so a maximal length is reserved. After the load
// ExpandTensors() replaces each region in the tensor table by its state-dict tensors
// with their real sizes (named as in the HF layout), so the table equals that of a load
// of the stored quantized artifact.
//
// Bytes are bit-identical to quant::PrepareTensor on the whole tensor (the streaming
// quantizer's contract).
//
// Where it quantizes: on the destination device when its backend can (a CUDA device:
// kernels::GpuStreamingQuantizer through the CUDA backend, loader/device_backends.h; the
// checkpoint's bytes go up unit by unit, never the whole tensor), else on the CPU (host
// devices, Conv1D weights). The quantized parts are then written to the region through the
// OutputWriter like any output: the GPU path brings its (4x smaller) results back to the
// host for that, as the OutputWriter has no device-to-device write.
//
// Thread safety: the provider is thread-safe (TransformProvider contract 4).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "loader/loaded_model.h"
#include "loader/tensor_transform.h"
#include "quant/policy.h"
#include "store/manifest.h"

namespace loadstar::loader {

class QuantizeTransformProvider : public TransformProvider {
 public:
  struct Options {
    quant::QuantConfig config;
    std::string model_type;  // config.json's model_type (Conv1D weights are transposed)
    int quantize_threads = 1;  // threads per tensor (the pipeline already runs tensors
                               // in parallel on its workers)
  };
  explicit QuantizeTransformProvider(Options options) : options_(std::move(options)) {}

  std::optional<TransformedTensor> Plan(const store::ManifestTensor& tensor) override;
  absl::StatusOr<std::unique_ptr<TensorTransform>> Begin(
      const store::ManifestTensor& tensor, const TransformedTensor& output) override;
  // Tensor parallelism: the shard is quantized on its own blocks, as a tensor of its own
  // (its own absmax, nested state and quant_state JSON).
  absl::StatusOr<std::unique_ptr<TensorTransform>> BeginShard(
      const store::ManifestTensor& shard_tensor, const TransformedTensor& output,
      int shard) override;

  // Tensors quantized on their device (not the CPU) so far.
  int device_quantized_tensors() const {
    return device_quantized_.load(std::memory_order_relaxed);
  }

  // Rewrites `model`'s tensor table: every quantized region becomes its state-dict
  // tensors. REQUIRES: the load that used this provider succeeded.
  absl::Status ExpandTensors(LoadedModel& model) const;

  // One state-dict tensor inside a quantized region.
  struct Part {
    std::string name;
    DType dtype = DType::kU8;
    std::vector<int64_t> shape;
    uint64_t offset = 0;  // inside the region
    uint64_t size = 0;
  };

 private:
  friend class QuantizeTensorTransform;
  void Record(const std::string& name, int shard, std::vector<Part> parts);

  const Options options_;
  std::atomic<int> device_quantized_{0};
  mutable std::mutex mu_;
  // By (source name, shard); shard 0 when the tensor is not split.
  std::map<std::pair<std::string, int>, std::vector<Part>> done_ ABSL_GUARDED_BY(mu_);
};

// Sets the transform_info of every quantized weight in `model` (loaded from a stored
// artifact or expanded) to its quant state as JSON, with the device offsets of its
// companion tensors: {"quant_type", "blocksize", "dtype", "shape", "absmax_offset",
// "quant_map_offset", "nested_absmax_offset", "nested_quant_map_offset",
// "nested_blocksize", "nested_offset"} for 4-bit; {"quant_type": "int8", "scb_offset"}.
// Companions are looked up on the weight's own device, so each tensor-parallel shard
// points at its own state.
void AnnotateQuantState(LoadedModel& model);

}  // namespace loadstar::loader
