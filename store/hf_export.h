// HF export of a quantized model (SPEC §3.1 `store export`, §6 serialization): a
// directory that transformers + bitsandbytes load with from_pretrained:
//
//   <out>/model.safetensors                     (or model-0000i-of-0000n.safetensors +
//                                                model.safetensors.index.json when sharded)
//   <out>/config.json                           the stored config.json with
//                                                quantization_config = QuantConfig::ToHfJson()
//                                                and torch_dtype set
//   <out>/<other extra files>                   copied (tokenizer, generation config)
//
// The tensors are the stored variant of that config when it exists (read as stored,
// checksums verified), else the checkpoint quantized while it is read
// (quantized_artifact.h). Atomic: everything is written to "<out>.tmp-<pid>-<n>" beside
// <out>, fsynced, and renamed into place; on error nothing appears at <out>.
//
// Thread safety: a free function; concurrent exports to different directories are safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "quant/policy.h"
#include "store/store.h"

namespace loadstar::store {

struct ExportOptions {
  // A new shard starts before a tensor that would push the current one past this (as
  // transformers' max_shard_size, default "5GB").
  uint64_t max_shard_bytes = 5'000'000'000ull;
  bool overwrite = false;  // replace an existing <out>
};

struct ExportResult {
  std::string source;  // "artifact" (a stored variant) or "checkpoint" (quantized now)
  std::vector<std::string> files;  // written, relative to <out>
  uint64_t tensor_bytes = 0;
  size_t tensors = 0;
};

absl::StatusOr<ExportResult> ExportQuantized(const Store& store, const std::string& name,
                                             const quant::QuantConfig& config,
                                             const std::string& out_dir,
                                             const ProgressCallback& progress = {},
                                             const ExportOptions& options = {});

}  // namespace loadstar::store
