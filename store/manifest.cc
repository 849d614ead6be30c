#include "store/manifest.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "store/checksum.h"
#include "store/json_util.h"
#include "store/names.h"
#include "store/tensor.h"

namespace loadstar::store {
namespace {

using nlohmann::json;

// Collects the error context so every message reads "<source>: <where>: <what>".
class Checker {
 public:
  explicit Checker(std::string_view source) : source_(source) {}

  absl::Status Error(std::string_view where, std::string_view what) const {
    return absl::InvalidArgumentError(fmt::format("{}: {}: {}", source_, where, what));
  }

  // Every key of `object` must be in `allowed`; every key in `required` must be present.
  absl::Status Keys(const json& object, std::string_view where,
                    std::initializer_list<std::string_view> required,
                    std::initializer_list<std::string_view> optional) const {
    for (const auto& [key, value] : object.items()) {
      bool known = std::find(required.begin(), required.end(), key) != required.end() ||
                   std::find(optional.begin(), optional.end(), key) != optional.end();
      if (!known) return Error(where, fmt::format("unknown key \"{}\"", key));
    }
    for (std::string_view key : required) {
      if (!object.contains(std::string(key))) {
        return Error(where, fmt::format("missing key \"{}\"", key));
      }
    }
    return absl::OkStatus();
  }

  absl::Status String(const json& object, std::string_view key, std::string_view where,
                      std::string* out) const {
    const json& value = object.at(std::string(key));
    if (!value.is_string()) {
      return Error(where, fmt::format("\"{}\" must be a string, not {}", key,
                                      JsonTypeName(value)));
    }
    *out = value.get<std::string>();
    return absl::OkStatus();
  }

  absl::Status Unsigned(const json& object, std::string_view key, std::string_view where,
                        uint64_t* out) const {
    const json& value = object.at(std::string(key));
    if (!value.is_number_unsigned()) {
      return Error(where, fmt::format("\"{}\" must be a non-negative integer", key));
    }
    *out = value.get<uint64_t>();
    return absl::OkStatus();
  }

 private:
  std::string_view source_;
};

absl::StatusOr<ManifestTensor> ParseTensor(const Checker& check, const json& entry,
                                           size_t index, size_t file_count) {
  std::string where = fmt::format("tensors[{}]", index);
  if (!entry.is_object()) return check.Error(where, "must be an object");
  RETURN_IF_ERROR(check.Keys(entry, where,
                             {"name", "dtype", "shape", "file", "offset", "size", "checksums"},
                             {}));
  ManifestTensor tensor;
  RETURN_IF_ERROR(check.String(entry, "name", where, &tensor.name));
  if (tensor.name.empty()) return check.Error(where, "empty tensor name");
  where = fmt::format("tensor \"{}\"", tensor.name);

  std::string dtype_name;
  RETURN_IF_ERROR(check.String(entry, "dtype", where, &dtype_name));
  std::optional<DType> dtype = ParseDType(dtype_name);
  if (!dtype) return check.Error(where, fmt::format("unknown dtype \"{}\"", dtype_name));
  tensor.dtype = *dtype;

  const json& shape = entry.at("shape");
  if (!shape.is_array()) return check.Error(where, "\"shape\" must be an array");
  for (const json& dim : shape) {
    if (!dim.is_number_unsigned() ||
        dim.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return check.Error(where, "shape dimensions must be non-negative integers");
    }
    tensor.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
  }

  uint64_t file = 0;
  RETURN_IF_ERROR(check.Unsigned(entry, "file", where, &file));
  if (file >= file_count) {
    return check.Error(where, fmt::format("file index {} out of range ({} files)", file,
                                          file_count));
  }
  tensor.file = static_cast<uint32_t>(file);
  RETURN_IF_ERROR(check.Unsigned(entry, "offset", where, &tensor.offset));
  if (tensor.offset % kTensorAlignment != 0) {
    return check.Error(where, fmt::format("offset {} is not a multiple of {}", tensor.offset,
                                          kTensorAlignment));
  }
  RETURN_IF_ERROR(check.Unsigned(entry, "size", where, &tensor.size));
  std::optional<uint64_t> expected = TensorByteSize(tensor.dtype, tensor.shape);
  if (!expected) {
    return check.Error(where, fmt::format("shape {} overflows", ShapeToString(tensor.shape)));
  }
  if (*expected != tensor.size) {
    return check.Error(where, fmt::format("size {} does not match {} {} ({} bytes)",
                                          tensor.size, dtype_name,
                                          ShapeToString(tensor.shape), *expected));
  }
  uint64_t end;
  if (__builtin_add_overflow(tensor.offset, tensor.size, &end)) {
    return check.Error(where, "offset + size overflows");
  }

  const json& sums = entry.at("checksums");
  if (!sums.is_array()) return check.Error(where, "\"checksums\" must be an array");
  if (sums.size() != ChecksumCount(tensor.size)) {
    return check.Error(where, fmt::format("{} checksums, expected {} for {} bytes",
                                          sums.size(), ChecksumCount(tensor.size),
                                          tensor.size));
  }
  for (const json& sum : sums) {
    uint64_t value = 0;
    if (!sum.is_string() || !ChecksumFromHex(sum.get<std::string>(), &value)) {
      return check.Error(where, "checksums must be 16 lowercase hex digits");
    }
    tensor.checksums.push_back(value);
  }
  return tensor;
}

// `kept_paths`: entries may be DIR/NAME (IsKeptFilePath), else plain names.
absl::Status ParseFileNames(const Checker& check, const json& array, std::string_view key,
                            std::vector<std::string>* out, bool kept_paths = false) {
  if (!array.is_array()) return check.Error(key, "must be an array of file names");
  std::set<std::string> seen;
  for (const json& name : array) {
    bool valid = name.is_string() && (kept_paths ? IsKeptFilePath(name.get<std::string>())
                                                 : IsPlainFileName(name.get<std::string>()));
    if (!valid) {
      return check.Error(key, fmt::format("invalid file name {}", JsonSnippet(name)));
    }
    if (!seen.insert(name.get<std::string>()).second) {
      return check.Error(key, fmt::format("duplicate file name {}", JsonSnippet(name)));
    }
    out->push_back(name.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t Manifest::TotalBytes() const {
  uint64_t total = 0;
  for (const ManifestTensor& tensor : tensors) total += tensor.size;
  return total;
}

const ManifestTensor* Manifest::Find(std::string_view tensor_name) const {
  for (const ManifestTensor& tensor : tensors) {
    if (tensor.name == tensor_name) return &tensor;
  }
  return nullptr;
}

std::string SerializeManifest(const Manifest& manifest) {
  json root = json::object();
  root["version"] = manifest.version;
  root["name"] = manifest.name;
  root["variant"] = manifest.variant;
  root["quantization_json"] = manifest.quantization_json;
  root["files"] = manifest.files;
  root["extra_files"] = manifest.extra_files;
  json tensors = json::array();
  for (const ManifestTensor& tensor : manifest.tensors) {
    json sums = json::array();
    for (uint64_t sum : tensor.checksums) sums.push_back(ChecksumToHex(sum));
    tensors.push_back({{"name", tensor.name},
                       {"dtype", std::string(DTypeName(tensor.dtype))},
                       {"shape", tensor.shape},
                       {"file", tensor.file},
                       {"offset", tensor.offset},
                       {"size", tensor.size},
                       {"checksums", std::move(sums)}});
  }
  root["tensors"] = std::move(tensors);
  // One tensor per line keeps big manifests readable and diffable.
  return root.dump(1) + "\n";
}

absl::StatusOr<Manifest> ParseManifest(std::string_view text, std::string_view source) {
  Checker check(source);
  ASSIGN_OR_RETURN(json root, ParseJsonStrict(text, source));
  if (!root.is_object()) return check.Error("manifest", "must be a JSON object");
  RETURN_IF_ERROR(check.Keys(root, "manifest", {"version", "name", "files", "tensors"},
                             {"variant", "quantization_json", "extra_files"}));
  Manifest manifest;
  const json& version = root.at("version");
  if (!version.is_number_integer() || version.get<int64_t>() != kManifestVersion) {
    return check.Error("version", fmt::format("unsupported manifest version {} (this build "
                                              "reads version {})",
                                              JsonSnippet(version), kManifestVersion));
  }
  RETURN_IF_ERROR(check.String(root, "name", "manifest", &manifest.name));
  if (absl::Status valid = ValidateModelName(manifest.name); !valid.ok()) {
    return check.Error("name", std::string(valid.message()));
  }
  if (root.contains("variant")) {
    RETURN_IF_ERROR(check.String(root, "variant", "manifest", &manifest.variant));
    if (absl::Status valid = ValidateVariantKey(manifest.variant);
        !manifest.variant.empty() && !valid.ok()) {
      return check.Error("variant", std::string(valid.message()));
    }
  }
  if (root.contains("quantization_json")) {
    RETURN_IF_ERROR(
        check.String(root, "quantization_json", "manifest", &manifest.quantization_json));
  }
  RETURN_IF_ERROR(ParseFileNames(check, root.at("files"), "files", &manifest.files));
  if (root.contains("extra_files")) {
    RETURN_IF_ERROR(
        ParseFileNames(check, root.at("extra_files"), "extra_files", &manifest.extra_files,
                       /*kept_paths=*/true));
  }
  if (manifest.files.size() > UINT32_MAX) return check.Error("files", "too many files");

  const json& tensors = root.at("tensors");
  if (!tensors.is_array()) return check.Error("tensors", "must be an array");
  std::set<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    ASSIGN_OR_RETURN(ManifestTensor tensor,
                     ParseTensor(check, tensors[i], i, manifest.files.size()));
    if (!names.insert(tensor.name).second) {
      return check.Error(fmt::format("tensor \"{}\"", tensor.name), "duplicate tensor name");
    }
    if (!manifest.tensors.empty()) {
      const ManifestTensor& prev = manifest.tensors.back();
      bool ordered = prev.file < tensor.file ||
                     (prev.file == tensor.file && prev.offset + prev.size <= tensor.offset);
      if (!ordered) {
        return check.Error(fmt::format("tensor \"{}\"", tensor.name),
                           fmt::format("overlaps or precedes tensor \"{}\" (tensors must be "
                                       "sorted by file and offset without overlap)",
                                       prev.name));
      }
    }
    manifest.tensors.push_back(std::move(tensor));
  }
  return manifest;
}

}  // namespace loadstar::store
