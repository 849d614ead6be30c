// Writes safetensors files that the reference library (and ReadSafetensors) accept: the
// header lists tensors with data_offsets in the given order, is padded with spaces so the
// data section starts at a multiple of 8 (as the reference writer does), and the data
// follows with no gaps. Used by tests (tests/util/checkpoint_builder.h) and by the
// bitsandbytes-compatible HF export.
//
// Thread safety: free functions; concurrent writes to different paths are safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/env.h"
#include "store/tensor.h"

namespace loadstar::store {

// The header JSON (unpadded) for `specs` laid out back to back in order, with
// `metadata` as "__metadata__" when non-empty.
std::string SafetensorsHeaderJson(const std::vector<TensorSpec>& specs,
                                  const std::map<std::string, std::string>& metadata = {});

// Writes `path` atomically (temp file beside it, fsync, rename, fsync dir), streaming
// each tensor through its filler. InvalidArgument for a duplicate or empty name, the
// name "__metadata__", or an invalid shape; a filler's error; the Env's.
absl::Status WriteSafetensors(Env* env, const std::string& path,
                              std::vector<TensorInput> tensors,
                              const std::map<std::string, std::string>& metadata = {});

// The whole file in memory, for small tensors (tests, fuzz seeds).
absl::StatusOr<std::string> SerializeSafetensors(
    std::vector<TensorInput> tensors, const std::map<std::string, std::string>& metadata = {});

}  // namespace loadstar::store
