// Helpers for the store tests: reading back a stored tensor's bytes.
#pragma once

#include <string>

#include "base/env.h"
#include "store/store.h"

namespace loadstar::store {

// The bytes of `tensor` as stored (read through the store's DataFilePath).
inline std::string ReadStoredTensor(Store& store, const Manifest& manifest,
                                    const std::string& tensor) {
  const ManifestTensor* entry = manifest.Find(tensor);
  if (entry == nullptr) return "<missing>";
  absl::StatusOr<std::string> path = store.DataFilePath(manifest, entry->file);
  if (!path.ok()) return "<bad path>";
  absl::StatusOr<std::string> data = ReadFileToString(Env::Default(), *path);
  if (!data.ok() || data->size() < entry->offset + entry->size) return "<short file>";
  return data->substr(entry->offset, entry->size);
}

}  // namespace loadstar::store
