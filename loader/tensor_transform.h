// The hook for a per-tensor transform stage in the load pipeline: quantize-while-streaming
// plugs in here (quant/ provides a TransformProvider; the pipeline knows nothing of
// formats). A transformed tensor is read, checksum-verified and handed to its transform
// chunk by chunk, in order; the transform writes output of a different size (and dtype
// and shape) into the tensor's place on the device.
//
// Contract:
//  1. Plan() runs while the load is planned, once per tensor, and fixes the output size;
//     the plan reserves exactly that many bytes on the device.
//  2. For each transformed tensor the pipeline calls Begin(), then Consume() with the
//     tensor's bytes in order (each chunk a whole number of elements: chunks are
//     multiples of 4 KiB except the tensor's last one), then Finish(). All calls for one
//     tensor come from one thread; different tensors are transformed concurrently.
//  3. The transform writes its output with OutputWriter::Write at offsets inside
//     [0, output size); the bytes are copied before Write returns, so the transform may
//     reuse its buffers. On any error the pipeline aborts the load (and frees it).
//  4. Provider methods are thread-safe.
//  5. Tensor parallelism (load_plan.h kTensorParallel): each shard of a transformed
//     tensor is transformed on its own, as if the shard were the whole tensor: Plan()
//     sees the shard (its shape and size; the source's name, dtype and file), and the
//     pipeline calls BeginShard() once per shard with the shard's bytes in order. A
//     provider that keeps per-tensor state after Finish() keys it by (name, shard).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/device.h"
#include "base/dtype.h"
#include "store/manifest.h"

namespace loadstar::loader {

// What a transformed tensor looks like once loaded.
struct TransformedTensor {
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;
  uint64_t size = 0;  // output bytes reserved on the device
  // Free-form description the consumer needs to interpret the bytes (e.g. quantization
  // state as JSON: type, blocksize, absmax offset); copied into the tensor table.
  std::string info;
};

// Writes into the transformed tensor's output bytes on its device.
class OutputWriter {
 public:
  virtual ~OutputWriter() = default;
  virtual absl::Status Write(uint64_t offset, const void* data, uint64_t bytes) = 0;
  // The device the output lands on, so a transform can compute there (a CUDA device
  // quantizes on its GPU); nullptr when unknown (a transform then computes on the CPU).
  virtual Device* device() const { return nullptr; }
};

// One tensor's transform, used by one thread at a time.
class TensorTransform {
 public:
  virtual ~TensorTransform() = default;
  virtual absl::Status Consume(const char* data, uint64_t bytes, OutputWriter& out) = 0;
  virtual absl::Status Finish(OutputWriter& out) = 0;
};

class TransformProvider {
 public:
  virtual ~TransformProvider() = default;
  // nullopt: load the tensor unchanged.
  virtual std::optional<TransformedTensor> Plan(const store::ManifestTensor& tensor) = 0;
  virtual absl::StatusOr<std::unique_ptr<TensorTransform>> Begin(
      const store::ManifestTensor& tensor, const TransformedTensor& output) = 0;
  // Contract 5: shard `shard` of a tensor split over devices. The default refuses, so a
  // provider that does not key its state by shard cannot be combined with
  // tensor_parallel by accident.
  virtual absl::StatusOr<std::unique_ptr<TensorTransform>> BeginShard(
      const store::ManifestTensor& shard_tensor, const TransformedTensor& output, int shard) {
    (void)output;
    (void)shard;
    return absl::FailedPreconditionError(
        "tensor " + shard_tensor.name +
        ": this load-time transform does not support tensor_parallel shards");
  }
};

}  // namespace loadstar::loader
