#include "store/store.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <memory>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "store/checksum.h"
#include "store/bnb_checkpoint.h"
#include "store/gguf.h"
#include "store/gguf_model.h"
#include "store/gptq_checkpoint.h"
#include "store/hf_checkpoint.h"
#include "store/prequant_info.h"
#include "store/names.h"

namespace loadstar::store {
namespace {

constexpr char kTempDirName[] = ".tmp";
constexpr char kManifestName[] = "manifest.json";
// Manifests are a few hundred bytes per tensor; this bounds what a corrupt file can cost.
constexpr uint64_t kMaxManifestBytes = 256ull << 20;

// Temp entries are "<pid>-<counter>-<purpose>", so Open can tell which belong to a
// process that no longer runs.
bool OwnerIsDead(std::string_view entry) {
  size_t dash = entry.find('-');
  if (dash == std::string_view::npos || dash == 0) return false;
  long pid = std::strtol(std::string(entry.substr(0, dash)).c_str(), nullptr, 10);
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

// Copies tensor bytes straight from a source safetensors file into the writer's buffer.
TensorFiller ShardFiller(std::shared_ptr<RandomAccessFile> file, uint64_t start,
                         std::string tensor) {
  return [file = std::move(file), start, tensor = std::move(tensor)](
             uint64_t offset, char* dst, size_t n) -> absl::Status {
    ASSIGN_OR_RETURN(size_t got, file->Read(start + offset, n, dst));
    if (got != n) {
      return absl::DataLossError(fmt::format("{}: tensor \"{}\": file shrank while reading it",
                                             file->path(), tensor));
    }
    return absl::OkStatus();
  };
}

// A GGUF file as the store keeps it (SPEC §6.1): its tensors under their HF names, packed
// bytes copied unchanged (4 KiB-aligned and checksummed by the writer like any tensor),
// with the generated config.json, prequant.json (store/prequant_info.h) and the
// tokenizer metadata as tokenizer.gguf (store/gguf_model.h).
absl::Status GgufInputs(Env* env, const std::string& path,
                        std::vector<std::vector<TensorInput>>* groups,
                        std::vector<std::pair<std::string, std::string>>* extras) {
  ASSIGN_OR_RETURN(GgufFile gguf, ReadGguf(env, path));
  ASSIGN_OR_RETURN(GgufModel model, MapGgufModel(gguf));
  ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> opened, env->NewRandomAccessFile(path));
  if (opened->Size() != gguf.file_size) {
    return absl::DataLossError(fmt::format("{}: file changed while saving", path));
  }
  std::shared_ptr<RandomAccessFile> file = std::move(opened);
  std::vector<TensorInput> group;
  for (const GgufModelTensor& t : model.tensors) {
    TensorInput input;
    input.spec = {t.hf_name, t.stored_dtype, t.stored_shape};
    input.fill = ShardFiller(file, gguf.data_offset + t.source->offset, t.hf_name);
    group.push_back(std::move(input));
  }
  groups->push_back(std::move(group));
  extras->emplace_back("config.json", model.config_json);
  extras->emplace_back(kPrequantInfoFileName, SerializePrequantInfo(model.info));
  ASSIGN_OR_RETURN(std::optional<std::string> tokenizer, GgufTokenizerFile(gguf, *file));
  if (tokenizer) extras->emplace_back("tokenizer.gguf", *std::move(tokenizer));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(Options options) {
  if (options.root.empty()) return absl::InvalidArgumentError("store root is empty");
  if (options.env == nullptr) options.env = Env::Default();
  while (options.root.size() > 1 && options.root.back() == '/') options.root.pop_back();
  Env* env = options.env;
  std::string tmp = JoinPath(options.root, kTempDirName);
  RETURN_IF_ERROR(env->CreateDirs(tmp));
  ASSIGN_OR_RETURN(std::vector<std::string> entries, env->GetChildren(tmp));
  for (const std::string& entry : entries) {
    if (OwnerIsDead(entry)) env->RemoveRecursively(JoinPath(tmp, entry)).IgnoreError();
  }
  return std::unique_ptr<Store>(new Store(std::move(options)));
}

absl::StatusOr<std::string> Store::ModelDir(const std::string& name,
                                            const std::string& variant) const {
  RETURN_IF_ERROR(ValidateModelName(name));
  std::string dir = JoinPath(options_.root, name);
  if (variant.empty()) return dir;
  RETURN_IF_ERROR(ValidateVariantKey(variant));
  return JoinPath(JoinPath(dir, kVariantsDirName), variant);
}

absl::StatusOr<std::string> Store::DataFilePath(const Manifest& manifest,
                                                uint32_t file) const {
  if (file >= manifest.files.size()) {
    return absl::InvalidArgumentError(fmt::format(
        "model {}: data file index {} out of range ({} files)", manifest.name, file,
        manifest.files.size()));
  }
  ASSIGN_OR_RETURN(std::string dir, ModelDir(manifest.name, manifest.variant));
  return JoinPath(dir, manifest.files[file]);
}

absl::StatusOr<std::string> Store::MakeTempDir(std::string_view purpose) {
  static std::atomic<uint64_t> counter{0};
  std::string dir = JoinPath(JoinPath(options_.root, kTempDirName),
                             fmt::format("{}-{}-{}", ::getpid(), counter.fetch_add(1), purpose));
  RETURN_IF_ERROR(options_.env->RemoveRecursively(dir));
  RETURN_IF_ERROR(options_.env->CreateDirs(dir));
  return dir;
}

absl::Status Store::Publish(const std::string& tmp, const std::string& final_dir,
                            bool overwrite, std::string_view what) {
  Env* env = options_.env;
  std::string parent = DirName(final_dir);
  RETURN_IF_ERROR(env->CreateDirs(parent));
  std::string old;  // the replaced directory, deleted once the new one is in place
  if (env->FileExists(final_dir)) {
    if (!overwrite) return absl::AlreadyExistsError(fmt::format("{} already exists", what));
    ASSIGN_OR_RETURN(old, MakeTempDir("replaced"));
    RETURN_IF_ERROR(env->RemoveRecursively(old));
    RETURN_IF_ERROR(env->RenameFile(final_dir, old));
  }
  absl::Status renamed = env->RenameFile(tmp, final_dir);
  if (!renamed.ok()) {
    if (!old.empty()) env->RenameFile(old, final_dir).IgnoreError();  // put it back
    // rename(2) onto a non-empty directory fails: someone else published first.
    if (env->FileExists(JoinPath(final_dir, kManifestName))) {
      return absl::AlreadyExistsError(fmt::format("{} already exists", what));
    }
    return renamed;
  }
  RETURN_IF_ERROR(env->SyncDir(parent));
  RETURN_IF_ERROR(env->SyncDir(JoinPath(options_.root, kTempDirName)));
  if (!old.empty()) env->RemoveRecursively(old).IgnoreError();
  return absl::OkStatus();
}

absl::StatusOr<Manifest> Store::Save(const std::string& src_dir, const std::string& name,
                                     const ProgressCallback& progress,
                                     const SaveOptions& options) {
  ASSIGN_OR_RETURN(ModelWithVariants saved, SaveWithVariants(src_dir, name, {}, progress, options));
  return std::move(saved.model);
}

absl::StatusOr<ModelWithVariants> Store::SaveWithVariants(const std::string& src_dir,
                                                          const std::string& name,
                                                          std::vector<InPassVariant> variants,
                                                          const ProgressCallback& progress,
                                                          const SaveOptions& options) {
  Env* env = options_.env;
  RETURN_IF_ERROR(ValidateModelName(name));
  std::string final_dir = JoinPath(options_.root, name);
  std::string what = fmt::format("model {}", name);
  if (!options.overwrite && env->FileExists(final_dir)) {
    return absl::AlreadyExistsError(fmt::format("{} already exists in {}", what, root()));
  }
  // "org" and "org/name" cannot both be models: one directory would hold the other.
  if (size_t slash = name.find('/'); slash != std::string::npos) {
    std::string parent = name.substr(0, slash);
    if (env->FileExists(JoinPath(JoinPath(options_.root, parent), kManifestName))) {
      return absl::InvalidArgumentError(fmt::format(
          "invalid model name \"{}\": \"{}\" is already a model", name, parent));
    }
  } else if (env->IsDirectory(final_dir) &&
             !env->FileExists(JoinPath(final_dir, kManifestName))) {
    return absl::AlreadyExistsError(
        fmt::format("\"{}\" already holds models (\"{}/...\") in {}", name, name, root()));
  }

  // The checkpoint's tensors (one group per source file) and the small files kept with
  // them: a GGUF file's generated config.json and prequant.json, or an HF directory's own.
  std::vector<std::vector<TensorInput>> groups;
  std::vector<std::pair<std::string, std::string>> extras;  // relative path, bytes
  SaveSource source;  // what variants made in the same pass know of the model
  source.name = name;
  if (LooksLikeGguf(env, src_dir)) {
    RETURN_IF_ERROR(GgufInputs(env, src_dir, &groups, &extras));
    source.prequant_format = "gguf";
  } else {
    ASSIGN_OR_RETURN(HfCheckpoint checkpoint, OpenHfCheckpoint(env, src_dir));
    for (const SafetensorsFile& shard : checkpoint.shards) {
      ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> opened,
                       env->NewRandomAccessFile(shard.path));
      if (opened->Size() != shard.file_size) {
        return absl::DataLossError(fmt::format("{}: file changed while saving", shard.path));
      }
      std::shared_ptr<RandomAccessFile> file = std::move(opened);
      std::vector<TensorInput> group;
      for (const SafetensorsTensor& tensor : shard.tensors) {
        TensorInput input;
        input.spec = {tensor.name, tensor.dtype, tensor.shape};
        input.fill = ShardFiller(file, shard.data_offset + tensor.begin, tensor.name);
        group.push_back(std::move(input));
      }
      groups.push_back(std::move(group));
    }
    for (const std::string& extra : checkpoint.extra_files) {
      if (extra == kPrequantInfoFileName) continue;  // ours to write
      ASSIGN_OR_RETURN(std::string data, ReadFileToString(env, JoinPath(src_dir, extra),
                                                          kMaxKeptFileBytes));
      extras.emplace_back(extra, std::move(data));
    }
    // GPTQ / AWQ: the packed tensors are stored as they are; prequant.json says how the
    // loader unpacks them.
    ASSIGN_OR_RETURN(std::optional<GptqConfig> gptq, ReadGptqConfig(env, src_dir));
    // Saved bitsandbytes: stored as they are, served as stored.
    ASSIGN_OR_RETURN(std::optional<PrequantInfo> bnb, MapBnbCheckpoint(env, checkpoint));
    if (gptq || bnb) {
      PrequantInfo info;
      if (gptq) {
        ASSIGN_OR_RETURN(info, MapGptqCheckpoint(env, checkpoint, *gptq));
      } else {
        info = *std::move(bnb);
      }
      source.prequant_format = info.format;
      extras.emplace_back(kPrequantInfoFileName, SerializePrequantInfo(info));
      std::sort(extras.begin(), extras.end());
    }
  }

  for (const auto& group : groups) {
    for (const TensorInput& tensor : group) source.tensors.push_back(tensor.spec);
  }
  for (const auto& extra : extras) {
    if (extra.first == "config.json") source.config_json = extra.second;
  }
  // The variants' tensors are planned (a refusal returned) before anything is written.
  ASSIGN_OR_RETURN(VariantPass pass, VariantPass::Plan(std::move(source), std::move(variants)));

  ASSIGN_OR_RETURN(std::string tmp, MakeTempDir("save"));
  absl::StatusOr<ModelWithVariants> written = [&]() -> absl::StatusOr<ModelWithVariants> {
    Manifest fields;
    fields.name = name;
    for (const auto& [extra, data] : extras) {
      if (extra.find('/') != std::string::npos) {
        RETURN_IF_ERROR(env->CreateDirs(DirName(JoinPath(tmp, extra))));
      }
      RETURN_IF_ERROR(WriteFileDurably(env, JoinPath(tmp, extra), data));
      fields.extra_files.push_back(extra);
    }
    ASSIGN_OR_RETURN(ModelWithVariants saved,
                     std::move(pass).Write(env, tmp, std::move(fields), std::move(groups),
                                           progress));
    RETURN_IF_ERROR(Publish(tmp, final_dir, options.overwrite, what));
    return saved;
  }();
  if (!written.ok()) env->RemoveRecursively(tmp).IgnoreError();
  return written;
}

absl::StatusOr<Manifest> Store::WriteVariant(const VariantSpec& spec,
                                             std::vector<TensorInput> tensors,
                                             const ProgressCallback& progress) {
  Env* env = options_.env;
  ASSIGN_OR_RETURN(std::string model_dir, ModelDir(spec.model));
  ASSIGN_OR_RETURN(std::string final_dir, ModelDir(spec.model, spec.key));
  if (!env->FileExists(JoinPath(model_dir, kManifestName))) {
    return absl::NotFoundError(fmt::format("model {} not found in {}", spec.model, root()));
  }
  std::string what = fmt::format("variant {} of model {}", spec.key, spec.model);
  if (!spec.overwrite && env->FileExists(final_dir)) {
    return absl::AlreadyExistsError(fmt::format("{} already exists", what));
  }
  ASSIGN_OR_RETURN(std::string tmp, MakeTempDir("variant"));
  absl::StatusOr<Manifest> written = [&]() -> absl::StatusOr<Manifest> {
    Manifest fields;
    fields.name = spec.model;
    fields.variant = spec.key;
    fields.quantization_json = spec.quantization_json;
    ASSIGN_OR_RETURN(Manifest manifest,
                     WriteModelDir(env, tmp, std::move(fields),
                                   GroupBySize(std::move(tensors)), progress));
    RETURN_IF_ERROR(Publish(tmp, final_dir, spec.overwrite, what));
    return manifest;
  }();
  if (!written.ok()) env->RemoveRecursively(tmp).IgnoreError();
  return written;
}

absl::StatusOr<Manifest> Store::GetManifest(const std::string& name,
                                            const std::string& variant) const {
  Env* env = options_.env;
  ASSIGN_OR_RETURN(std::string dir, ModelDir(name, variant));
  std::string path = JoinPath(dir, kManifestName);
  if (!env->FileExists(path)) {
    if (variant.empty()) {
      return absl::NotFoundError(fmt::format("model {} not found in {}", name, root()));
    }
    return absl::NotFoundError(fmt::format("variant {} of model {} not found", variant, name));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(env, path, kMaxManifestBytes));
  ASSIGN_OR_RETURN(Manifest manifest, ParseManifest(text, path));
  if (manifest.name != name || manifest.variant != variant) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: manifest is for model \"{}\" variant \"{}\", not \"{}\" \"{}\"", path,
        manifest.name, manifest.variant, name, variant));
  }
  // Catch a truncated data file here, with a clear message, instead of mid-load.
  std::vector<uint64_t> needed(manifest.files.size(), 0);
  for (const ManifestTensor& tensor : manifest.tensors) {
    needed[tensor.file] = std::max(needed[tensor.file], tensor.offset + tensor.size);
  }
  for (size_t i = 0; i < manifest.files.size(); ++i) {
    std::string file = JoinPath(dir, manifest.files[i]);
    absl::StatusOr<uint64_t> size = env->GetFileSize(file);
    if (!size.ok()) {
      return absl::DataLossError(fmt::format("model {}: data file {} is missing: {}", name,
                                             file, std::string(size.status().message())));
    }
    if (*size < needed[i]) {
      return absl::DataLossError(fmt::format("model {}: data file {} is {} bytes, tensors "
                                             "need {}",
                                             name, file, *size, needed[i]));
    }
  }
  return manifest;
}

absl::StatusOr<std::vector<ModelInfo>> Store::List() const {
  Env* env = options_.env;
  std::vector<ModelInfo> models;
  auto add = [&](const std::string& name) -> absl::Status {
    ASSIGN_OR_RETURN(Manifest manifest, GetManifest(name));
    ModelInfo info;
    info.name = name;
    info.bytes = manifest.TotalBytes();
    info.tensors = manifest.tensors.size();
    ASSIGN_OR_RETURN(info.variants, VariantKeys(name));
    models.push_back(std::move(info));
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(std::vector<std::string> top, env->GetChildren(options_.root));
  for (const std::string& entry : top) {
    if (!IsPlainFileName(entry)) continue;  // .tmp and anything that is not ours
    std::string dir = JoinPath(options_.root, entry);
    if (env->FileExists(JoinPath(dir, kManifestName))) {
      RETURN_IF_ERROR(add(entry));
      continue;
    }
    if (!env->IsDirectory(dir)) continue;
    ASSIGN_OR_RETURN(std::vector<std::string> inner, env->GetChildren(dir));
    for (const std::string& sub : inner) {
      if (IsPlainFileName(sub) && env->FileExists(JoinPath(JoinPath(dir, sub), kManifestName))) {
        RETURN_IF_ERROR(add(entry + "/" + sub));
      }
    }
  }
  std::sort(models.begin(), models.end(),
            [](const ModelInfo& a, const ModelInfo& b) { return a.name < b.name; });
  return models;
}

absl::StatusOr<std::vector<std::string>> Store::VariantKeys(const std::string& name) const {
  Env* env = options_.env;
  ASSIGN_OR_RETURN(std::string dir, ModelDir(name));
  std::string variants_dir = JoinPath(dir, kVariantsDirName);
  std::vector<std::string> keys;
  if (!env->IsDirectory(variants_dir)) return keys;
  ASSIGN_OR_RETURN(std::vector<std::string> entries, env->GetChildren(variants_dir));
  for (const std::string& key : entries) {
    // Skips anything that is not a finished variant.
    if (IsPlainFileName(key) &&
        env->FileExists(JoinPath(JoinPath(variants_dir, key), kManifestName))) {
      keys.push_back(key);
    }
  }
  return keys;
}

absl::Status Store::VerifyDir(const std::string& name, const std::string& variant,
                              const ProgressCallback& progress, uint64_t* done,
                              uint64_t total) const {
  Env* env = options_.env;
  ASSIGN_OR_RETURN(Manifest manifest, GetManifest(name, variant));
  std::string label = variant.empty() ? fmt::format("model {}", name)
                                      : fmt::format("model {} variant {}", name, variant);
  auto buffer = std::make_unique<char[]>(kCopyBufferBytes);
  ChunkHasher hasher;
  for (uint32_t f = 0; f < manifest.files.size(); ++f) {
    ASSIGN_OR_RETURN(std::string path, DataFilePath(manifest, f));
    ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file, env->NewRandomAccessFile(path));
    for (const ManifestTensor& tensor : manifest.tensors) {
      if (tensor.file != f) continue;
      for (uint64_t pos = 0; pos < tensor.size;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(kCopyBufferBytes, tensor.size - pos));
        ASSIGN_OR_RETURN(size_t got, file->Read(tensor.offset + pos, n, buffer.get()));
        if (got != n) {
          return absl::DataLossError(fmt::format("{}: tensor \"{}\": {} is truncated", label,
                                                 tensor.name, path));
        }
        hasher.Update(std::string_view(buffer.get(), n));
        pos += n;
        *done += n;
        if (progress) progress(*done, total, tensor.name);
      }
      std::vector<uint64_t> sums = hasher.Finish();
      for (size_t i = 0; i < sums.size(); ++i) {
        if (sums[i] != tensor.checksums[i]) {
          return absl::DataLossError(fmt::format(
              "{}: tensor \"{}\" in {}: checksum mismatch in chunk {} (bytes {}..{} of the "
              "tensor): expected {}, got {}",
              label, tensor.name, path, i, i * kChecksumChunkBytes,
              std::min(tensor.size, (i + 1) * kChecksumChunkBytes),
              ChecksumToHex(tensor.checksums[i]), ChecksumToHex(sums[i])));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Store::Verify(const std::string& name, const ProgressCallback& progress) const {
  ASSIGN_OR_RETURN(Manifest manifest, GetManifest(name));
  uint64_t total = manifest.TotalBytes();
  ASSIGN_OR_RETURN(std::vector<std::string> variants, VariantKeys(name));
  for (const std::string& key : variants) {
    ASSIGN_OR_RETURN(Manifest variant, GetManifest(name, key));
    total += variant.TotalBytes();
  }
  uint64_t done = 0;
  RETURN_IF_ERROR(VerifyDir(name, "", progress, &done, total));
  for (const std::string& key : variants) {
    RETURN_IF_ERROR(VerifyDir(name, key, progress, &done, total));
  }
  return absl::OkStatus();
}

absl::Status Store::Remove(const std::string& name) {
  ASSIGN_OR_RETURN(std::string dir, ModelDir(name));
  Env* env = options_.env;
  if (!env->FileExists(JoinPath(dir, kManifestName))) {
    return absl::NotFoundError(fmt::format("model {} not found in {}", name, root()));
  }
  ASSIGN_OR_RETURN(std::string trash, MakeTempDir("removed"));
  RETURN_IF_ERROR(env->RemoveRecursively(trash));
  RETURN_IF_ERROR(env->RenameFile(dir, trash));
  RETURN_IF_ERROR(env->SyncDir(DirName(dir)));
  return env->RemoveRecursively(trash);
}

absl::Status Store::RemoveVariant(const std::string& name, const std::string& variant) {
  ASSIGN_OR_RETURN(std::string dir, ModelDir(name, variant));
  Env* env = options_.env;
  if (!env->FileExists(JoinPath(dir, kManifestName))) {
    return absl::NotFoundError(
        fmt::format("variant {} of model {} not found", variant, name));
  }
  ASSIGN_OR_RETURN(std::string trash, MakeTempDir("removed"));
  RETURN_IF_ERROR(env->RemoveRecursively(trash));
  RETURN_IF_ERROR(env->RenameFile(dir, trash));
  RETURN_IF_ERROR(env->SyncDir(DirName(dir)));
  return env->RemoveRecursively(trash);
}

}  // namespace loadstar::store
