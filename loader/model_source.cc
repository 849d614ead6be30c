#include "loader/model_source.h"

#include <utility>

#include "base/status_macros.h"

namespace loadstar::loader {

std::string ModelKey(const std::string& name, const std::string& variant) {
  return variant.empty() ? name : name + "@" + variant;
}

absl::StatusOr<ModelSource> ModelSourceFromStore(const store::Store& store,
                                                 const std::string& name,
                                                 const std::string& variant) {
  ASSIGN_OR_RETURN(store::Manifest manifest, store.GetManifest(name, variant));
  return ModelSourceFromManifest(store, std::move(manifest));
}

absl::StatusOr<ModelSource> ModelSourceFromManifest(const store::Store& store,
                                                    store::Manifest manifest) {
  ModelSource source;
  source.manifest = std::move(manifest);
  source.key = ModelKey(source.manifest.name, source.manifest.variant);
  for (uint32_t i = 0; i < source.manifest.files.size(); ++i) {
    ASSIGN_OR_RETURN(std::string path, store.DataFilePath(source.manifest, i));
    source.file_paths.push_back(std::move(path));
  }
  return source;
}

absl::StatusOr<ModelSource> ModelSourceFromDir(Env* env, const std::string& dir) {
  std::string path = JoinPath(dir, "manifest.json");
  ASSIGN_OR_RETURN(std::string json, ReadFileToString(env, path));
  ModelSource source;
  ASSIGN_OR_RETURN(source.manifest, store::ParseManifest(json, path));
  source.key = ModelKey(source.manifest.name, source.manifest.variant);
  for (const std::string& file : source.manifest.files) {
    source.file_paths.push_back(JoinPath(dir, file));
  }
  return source;
}

}  // namespace loadstar::loader
