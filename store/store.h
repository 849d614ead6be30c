// The loadstar checkpoint store: a directory of models in the loadstar layout
// (manifest.h), saved from Hugging Face checkpoints and read by the loader.
//
//   <root>/<name>/manifest.json, config.json, data-00000.bin ...
//   <root>/<name>/variants/<key>/manifest.json, data-00000.bin ...   (quantized artifacts)
//   <root>/.tmp/                                                       work in progress
//
// Every change is atomic: a model or variant is written completely under <root>/.tmp/,
// fsynced, and renamed into place, so readers (other threads, other processes) see either
// nothing or the whole model. A failed write removes its temp directory; temp entries
// left by a process that died are removed by the next Open.
//
// Thread safety: a Store holds no mutable state; every method may be called concurrently
// from any thread and from several processes sharing one root. Two concurrent saves of
// the same name: one succeeds, the other fails with AlreadyExists.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "store/manifest.h"
#include "store/model_writer.h"
#include "store/one_pass_writer.h"
#include "store/tensor.h"

namespace loadstar::store {

struct ModelInfo {
  std::string name;
  uint64_t bytes = 0;                 // tensor bytes of the original checkpoint
  size_t tensors = 0;
  std::vector<std::string> variants;  // variant keys, sorted
};

struct SaveOptions {
  // Replace an existing model of the same name (its variants, derived from the old
  // weights, are dropped with it). Readers may see the name missing for the instant
  // between two renames, never a partial model. Without it saving over an existing name
  // fails with AlreadyExists.
  bool overwrite = false;
};

// A quantized (or otherwise derived) artifact of a stored model.
struct VariantSpec {
  std::string model;              // store name of the model it derives from
  std::string key;                // canonical key, e.g. "nf4-bs64-dq" (ValidateVariantKey)
  std::string quantization_json;  // the quantization config, a JSON object, kept verbatim
  bool overwrite = false;         // replace an existing variant of that key
};

class Store {
 public:
  struct Options {
    std::string root;
    Env* env = Env::Default();
  };

  // Creates the root (and <root>/.tmp) if missing and clears temp entries of dead
  // processes.
  static absl::StatusOr<std::unique_ptr<Store>> Open(Options options);

  const std::string& root() const { return options_.root; }
  Env* env() const { return options_.env; }

  // Copies the HF checkpoint in `src_dir` (hf_checkpoint.h) into the store as `name`:
  // one data file per source shard, tensors 4 KiB-aligned, checksums computed on the
  // way, config.json and tokenizer/generation files kept. Returns the manifest written.
  // Errors: InvalidArgument (bad name, invalid checkpoint), AlreadyExists, or the Env's
  // (ResourceExhausted for a full disk); on any error nothing appears under `name`.
  absl::StatusOr<Manifest> Save(const std::string& src_dir, const std::string& name,
                                const ProgressCallback& progress = {},
                                const SaveOptions& options = {});

  // Save, and in the same pass the variants `variants` of the saved model
  // (one_pass_writer.h: they are made from the source tensors' bytes as the copy passes
  // them, and written concurrently with it). They are written inside the model's temp
  // directory and published with it by one rename: on any error (a variant's included)
  // neither the model nor any variant appears, and the old model stays when
  // `options.overwrite` replaces one (whose variants are replaced by these). Errors as
  // Save, plus InvalidArgument for a bad or repeated key and the variants' own errors
  // (make_tensors' before anything is written). With no variants this is Save.
  absl::StatusOr<ModelWithVariants> SaveWithVariants(const std::string& src_dir,
                                                     const std::string& name,
                                                     std::vector<InPassVariant> variants,
                                                     const ProgressCallback& progress = {},
                                                     const SaveOptions& options = {});

  // Writes a variant of a stored model from `tensors` (streamed through their fillers,
  // never all in memory), atomically, into <model>/variants/<key>/. For example:
  //   TensorInput q;
  //   q.spec = {"layer.0.weight", DType::kU8, {packed_bytes}};
  //   q.fill = [&](uint64_t offset, char* dst, size_t n) {
  //     return quantizer.Produce(offset, dst, n);  // bytes [offset, offset + n)
  //   };
  //   tensors.push_back(std::move(q));
  //   tensors.push_back(TensorInput::FromBytes({"layer.0.weight.absmax", DType::kF32,
  //                                             {blocks}}, absmax_bytes));
  //   store->WriteVariant({.model = "org/m", .key = "nf4-bs64-dq",
  //                        .quantization_json = config_json}, std::move(tensors)); Tensors are written
  // in the given order (split into data files of at most kMaxDataFileBytes). Returns the
  // manifest written (name = spec.model, variant = spec.key).
  // Errors: NotFound (no such model), AlreadyExists (variant exists and !overwrite),
  // InvalidArgument (bad key or tensor spec), a filler's error, the Env's.
  absl::StatusOr<Manifest> WriteVariant(const VariantSpec& spec,
                                        std::vector<TensorInput> tensors,
                                        const ProgressCallback& progress = {});

  // Every model, sorted by name.
  absl::StatusOr<std::vector<ModelInfo>> List() const;

  // The validated manifest of `name` (or of its variant `variant`); also checks that its
  // data files exist and are long enough for the extents. NotFound for an unknown model
  // or variant, InvalidArgument for a bad name or manifest, DataLoss for a short file.
  absl::StatusOr<Manifest> GetManifest(const std::string& name,
                                       const std::string& variant = "") const;

  // Directory of a model or variant (validates the names; does not check existence).
  absl::StatusOr<std::string> ModelDir(const std::string& name,
                                       const std::string& variant = "") const;

  // Absolute path of data file `file` of a manifest returned by GetManifest (its name
  // and variant locate the directory). InvalidArgument when `file` is out of range.
  absl::StatusOr<std::string> DataFilePath(const Manifest& manifest, uint32_t file) const;

  // Re-reads and re-hashes every tensor of the model and all its variants. DataLoss
  // naming the tensor, the file and the chunk on the first mismatch.
  absl::Status Verify(const std::string& name, const ProgressCallback& progress = {}) const;

  // Removes the model with its variants (atomically: renamed away, then deleted).
  // Readers that already opened its data files keep reading them (POSIX semantics).
  // NotFound for an unknown model.
  absl::Status Remove(const std::string& name);

  // Removes one variant. NotFound when it does not exist.
  absl::Status RemoveVariant(const std::string& name, const std::string& variant);

 private:
  explicit Store(Options options) : options_(std::move(options)) {}

  // A fresh, unique, empty directory under <root>/.tmp/.
  absl::StatusOr<std::string> MakeTempDir(std::string_view purpose);
  // Renames the finished `tmp` directory to `final_dir`, replacing an existing one when
  // `overwrite`; AlreadyExists otherwise.
  absl::Status Publish(const std::string& tmp, const std::string& final_dir,
                       bool overwrite, std::string_view what);
  // Keys of the variants of `name` that have a manifest, sorted.
  absl::StatusOr<std::vector<std::string>> VariantKeys(const std::string& name) const;
  absl::Status VerifyDir(const std::string& name, const std::string& variant,
                         const ProgressCallback& progress, uint64_t* done,
                         uint64_t total) const;

  Options options_;
};

}  // namespace loadstar::store
