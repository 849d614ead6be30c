#include "store/hf_export.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "base/env.h"
#include "base/status_macros.h"
#include "store/hf_checkpoint.h"
#include "quant/quant_state.h"
#include "store/quantized_artifact.h"
#include "store/safetensors_writer.h"

namespace loadstar::store {

namespace {

constexpr uint64_t kMaxConfigBytes = 16ull << 20;

absl::Status WriteExport(const Store& store, const Manifest& manifest,
                         const quant::QuantConfig& config, const std::string& dir,
                         std::vector<TensorInput> inputs, const ProgressCallback& progress,
                         const ExportOptions& options, ExportResult* result) {
  Env* env = store.env();
  // Progress over all tensor bytes, reported from the fillers.
  uint64_t total = 0;
  for (const TensorInput& in : inputs) total += TensorByteSize(in.spec.dtype, in.spec.shape).value_or(0);
  auto done = std::make_shared<uint64_t>(0);
  for (TensorInput& in : inputs) {
    TensorFiller inner = std::move(in.fill);
    std::string name = in.spec.name;
    in.fill = [inner, done, total, progress, name](uint64_t offset, char* dst,
                                                   size_t n) -> absl::Status {
      RETURN_IF_ERROR(inner(offset, dst, n));
      *done += n;
      if (progress) progress(*done, total, name);
      return absl::OkStatus();
    };
  }
  result->tensor_bytes = total;
  result->tensors = inputs.size();
  // Shards.
  std::vector<std::vector<TensorInput>> shards(1);
  uint64_t shard_bytes = 0;
  for (TensorInput& in : inputs) {
    uint64_t size = TensorByteSize(in.spec.dtype, in.spec.shape).value_or(0);
    if (!shards.back().empty() && shard_bytes + size > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += size;
    shards.back().push_back(std::move(in));
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string file = shards.size() == 1
                           ? std::string("model.safetensors")
                           : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1,
                                         shards.size());
    for (const TensorInput& in : shards[i]) weight_map[in.spec.name] = file;
    RETURN_IF_ERROR(WriteSafetensors(env, JoinPath(dir, file), std::move(shards[i]), metadata));
    result->files.push_back(file);
  }
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    RETURN_IF_ERROR(WriteFileAtomically(env, JoinPath(dir, "model.safetensors.index.json"),
                                        index.dump(2) + "\n"));
    result->files.push_back("model.safetensors.index.json");
  }
  // config.json with quantization_config; the other kept files as they are.
  ASSIGN_OR_RETURN(std::string model_dir, store.ModelDir(manifest.name));
  ASSIGN_OR_RETURN(std::string config_text,
                   ReadFileToString(env, JoinPath(model_dir, "config.json"), kMaxConfigBytes));
  nlohmann::json cfg = nlohmann::json::parse(config_text, nullptr, /*allow_exceptions=*/false);
  if (!cfg.is_object()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: config.json is not a JSON object", model_dir));
  }
  cfg["quantization_config"] = config.ToHfJson();
  cfg["torch_dtype"] = std::string(TorchDTypeName(config.torch_dtype));
  RETURN_IF_ERROR(WriteFileAtomically(env, JoinPath(dir, "config.json"), cfg.dump(2) + "\n"));
  result->files.push_back("config.json");
  for (const std::string& extra : manifest.extra_files) {
    if (extra == "config.json") continue;
    ASSIGN_OR_RETURN(std::string bytes,
                     ReadFileToString(env, JoinPath(model_dir, extra), kMaxKeptFileBytes));
    if (extra.find('/') != std::string::npos) {
      RETURN_IF_ERROR(env->CreateDirs(DirName(JoinPath(dir, extra))));
    }
    RETURN_IF_ERROR(WriteFileAtomically(env, JoinPath(dir, extra), bytes));
    result->files.push_back(extra);
  }
  return env->SyncDir(dir);
}

}  // namespace

absl::StatusOr<ExportResult> ExportQuantized(const Store& store, const std::string& name,
                                             const quant::QuantConfig& config,
                                             const std::string& out_dir,
                                             const ProgressCallback& progress,
                                             const ExportOptions& options) {
  if (config.type == quant::QuantType::kNone) {
    return absl::InvalidArgumentError("export needs a quantization (nf4, fp4 or int8)");
  }
  if (out_dir.empty()) return absl::InvalidArgumentError("--out: empty path");
  Env* env = store.env();
  std::string out = out_dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (env->FileExists(out) && !options.overwrite) {
    return absl::AlreadyExistsError(fmt::format("{} already exists", out));
  }
  ASSIGN_OR_RETURN(Manifest manifest, store.GetManifest(name));
  ExportResult result;
  std::vector<TensorInput> inputs;
  absl::StatusOr<Manifest> variant = store.GetManifest(name, config.VariantKey());
  // A variant stored with another torch_dtype has other bytes for the unquantized tensors.
  bool reuse = false;
  if (variant.ok()) {
    // The key fixes type, blocksize and double quant; skipped modules and torch_dtype
    // change the bytes too.
    nlohmann::json q = nlohmann::json::parse(variant->quantization_json, nullptr, false);
    absl::StatusOr<quant::QuantConfig> stored =
        q.is_object() ? quant::ParseQuantizationConfig(q)
                      : absl::StatusOr<quant::QuantConfig>(absl::InvalidArgumentError(""));
    reuse = stored.ok() && stored->skip_modules == config.skip_modules;
    for (const ManifestTensor& t : variant->tensors) {
      bool floating = t.dtype == DType::kF32 || t.dtype == DType::kF16 || t.dtype == DType::kBF16;
      if (floating && t.dtype != config.torch_dtype && !quant::IsQuantStateTensorName(t.name)) {
        reuse = false;
      }
    }
  }
  if (reuse) {
    result.source = "artifact";
    inputs = StoredInputs(store, *variant);
  } else if (variant.ok() || absl::IsNotFound(variant.status())) {
    result.source = "checkpoint";
    ASSIGN_OR_RETURN(inputs, QuantizedInputs(store, manifest, config, StoredModelType(store, name)));
  } else {
    return variant.status();
  }
  static std::atomic<int> counter{0};
  const std::string tmp = fmt::format("{}.tmp-{}-{}", out, getpid(), counter++);
  env->RemoveRecursively(tmp).IgnoreError();
  RETURN_IF_ERROR(env->CreateDirs(tmp));
  absl::Status s = WriteExport(store, manifest, config, tmp, std::move(inputs), progress,
                               options, &result);
  if (s.ok() && env->FileExists(out)) {
    // overwrite: move the old one aside first so <out> is never half-written.
    std::string old = tmp + ".old";
    s = env->RenameFile(out, old);
    if (s.ok()) {
      s = env->RenameFile(tmp, out);
      env->RemoveRecursively(old).IgnoreError();
    }
  } else if (s.ok()) {
    s = env->RenameFile(tmp, out);
  }
  if (s.ok()) s = env->SyncDir(DirName(out).empty() ? "." : DirName(out));
  if (!s.ok()) {
    env->RemoveRecursively(tmp).IgnoreError();
    return s;
  }
  return result;
}

}  // namespace loadstar::store
