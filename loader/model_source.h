// ModelSource: what the loader needs to read one model (or one quantized variant of it)
// from the store: its manifest and the paths of its data files. The daemon and the CLI
// build it from store::Store; tests build it from a model directory.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "store/manifest.h"
#include "store/store.h"

namespace loadstar::loader {

struct ModelSource {
  // Identifies the bytes for the host cache: "<name>" or "<name>@<variant>".
  std::string key;
  store::Manifest manifest;
  std::vector<std::string> file_paths;  // parallel to manifest.files
};

// The cache key of a model variant ("" for the original checkpoint).
std::string ModelKey(const std::string& name, const std::string& variant);

// The model `name` (or its variant `variant`) of `store`: Store::GetManifest (NotFound for
// an unknown model) with its data file paths.
absl::StatusOr<ModelSource> ModelSourceFromStore(const store::Store& store,
                                                 const std::string& name,
                                                 const std::string& variant = "");

// The same for a manifest already read from `store` with Store::GetManifest (a caller that
// inspected it does not parse it twice: a variant's manifest of ~500 tensors takes ~6 ms).
absl::StatusOr<ModelSource> ModelSourceFromManifest(const store::Store& store,
                                                    store::Manifest manifest);

// Reads `<dir>/manifest.json` and resolves its data files against `dir`.
absl::StatusOr<ModelSource> ModelSourceFromDir(Env* env, const std::string& dir);

}  // namespace loadstar::loader
