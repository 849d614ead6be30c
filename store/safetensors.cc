#include "store/safetensors.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "store/json_util.h"
#include "store/tensor.h"

namespace loadstar::store {
namespace {

using nlohmann::json;

absl::Status Invalid(std::string_view source, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("{}: {}", source, what));
}

absl::Status InvalidTensor(std::string_view source, std::string_view tensor,
                           std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("{}: tensor \"{}\": {}", source, tensor, what));
}

uint64_t DecodeLittleEndian64(const char* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes[i]);
  return value;
}

// Checks the 8-byte prefix against the file size; returns N.
absl::StatusOr<uint64_t> CheckHeaderLength(const char* prefix, uint64_t file_size,
                                           std::string_view source) {
  uint64_t n = DecodeLittleEndian64(prefix);
  if (n > kMaxSafetensorsHeaderBytes) {
    return Invalid(source, fmt::format("header length {} exceeds the limit of {} bytes", n,
                                       kMaxSafetensorsHeaderBytes));
  }
  if (8 + n > file_size) {
    return Invalid(source, fmt::format("header length {} runs past the end of the file "
                                       "({} bytes)",
                                       n, file_size));
  }
  return n;
}

absl::StatusOr<SafetensorsTensor> ParseEntry(std::string_view source, const std::string& name,
                                             const json& entry) {
  if (!entry.is_object()) {
    return InvalidTensor(source, name,
                         fmt::format("entry must be an object, not {}", JsonTypeName(entry)));
  }
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return InvalidTensor(source, name, fmt::format("unknown key \"{}\"", key));
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) {
      return InvalidTensor(source, name, fmt::format("missing key \"{}\"", key));
    }
  }
  SafetensorsTensor tensor;
  tensor.name = name;

  const json& dtype = entry.at("dtype");
  if (!dtype.is_string()) return InvalidTensor(source, name, "\"dtype\" must be a string");
  std::optional<DType> parsed = ParseDType(dtype.get<std::string>());
  if (!parsed) {
    return InvalidTensor(source, name,
                         fmt::format("unknown dtype \"{}\"", dtype.get<std::string>()));
  }
  tensor.dtype = *parsed;

  const json& shape = entry.at("shape");
  if (!shape.is_array()) return InvalidTensor(source, name, "\"shape\" must be an array");
  for (const json& dim : shape) {
    if (!dim.is_number_unsigned() || dim.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return InvalidTensor(source, name,
                           fmt::format("shape dimension {} is not a non-negative integer",
                                       JsonSnippet(dim)));
    }
    tensor.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
  }

  const json& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return InvalidTensor(source, name,
                         "\"data_offsets\" must be [BEGIN, END] of non-negative integers");
  }
  tensor.begin = offsets[0].get<uint64_t>();
  tensor.end = offsets[1].get<uint64_t>();
  if (tensor.end < tensor.begin) {
    return InvalidTensor(source, name, fmt::format("data_offsets [{}, {}] end before begin",
                                                   tensor.begin, tensor.end));
  }
  std::optional<uint64_t> size = TensorByteSize(tensor.dtype, tensor.shape);
  if (!size) {
    return InvalidTensor(source, name, fmt::format("element count of shape {} overflows",
                                                   ShapeToString(tensor.shape)));
  }
  if (*size != tensor.end - tensor.begin) {
    return InvalidTensor(source, name,
                         fmt::format("{} {} needs {} bytes but data_offsets [{}, {}] hold {}",
                                     dtype.get<std::string>(), ShapeToString(tensor.shape),
                                     *size, tensor.begin, tensor.end,
                                     tensor.end - tensor.begin));
  }
  return tensor;
}

}  // namespace

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  for (const SafetensorsTensor& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

absl::StatusOr<SafetensorsFile> ParseSafetensorsHeader(std::string_view header,
                                                       uint64_t file_size,
                                                       std::string_view source) {
  SafetensorsFile file;
  file.path = std::string(source);
  file.file_size = file_size;
  file.data_offset = 8 + header.size();
  if (file.data_offset > file_size) {
    return Invalid(source, "header runs past the end of the file");
  }
  if (!IsValidUtf8(header)) return Invalid(source, "header is not valid UTF-8");
  absl::StatusOr<json> parsed = ParseJsonStrict(header, "header");
  if (!parsed.ok()) return Invalid(source, std::string(parsed.status().message()));
  const json& root = *parsed;
  if (!root.is_object()) {
    return Invalid(source, fmt::format("header must be a JSON object, not {}",
                                       JsonTypeName(root)));
  }
  // The reference reader requires the object to start at the first byte.
  if (header.empty() || header.front() != '{') {
    return Invalid(source, "header must start with '{'");
  }
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (value.is_null()) continue;  // serde reads null as "no metadata"
      if (!value.is_object()) return Invalid(source, "__metadata__ must be an object");
      for (const auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string()) {
          return Invalid(source, fmt::format("__metadata__ value of \"{}\" must be a string",
                                             meta_key));
        }
        file.metadata[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsTensor tensor, ParseEntry(source, key, value));
    file.tensors.push_back(std::move(tensor));
  }

  // Tile check: sorted by (begin, end), each entry starts where the previous one ended.
  std::sort(file.tensors.begin(), file.tensors.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  uint64_t expected_begin = 0;
  const SafetensorsTensor* prev = nullptr;
  for (const SafetensorsTensor& tensor : file.tensors) {
    if (tensor.begin != expected_begin) {
      std::string after = prev != nullptr ? fmt::format(" after tensor \"{}\"", prev->name) : "";
      return InvalidTensor(
          source, tensor.name,
          fmt::format("data_offsets [{}, {}] {} (expected BEGIN {}{}): tensors must tile "
                      "the data without holes or overlaps",
                      tensor.begin, tensor.end,
                      tensor.begin > expected_begin ? "leave a hole" : "overlap",
                      expected_begin, after));
    }
    expected_begin = tensor.end;
    prev = &tensor;
  }
  uint64_t data_size = file_size - file.data_offset;
  if (expected_begin != data_size) {
    std::string last = prev != nullptr ? fmt::format(" (last tensor \"{}\")", prev->name) : "";
    return Invalid(source, fmt::format("tensors cover {} bytes of data but the file holds "
                                       "{} bytes after the header{}: the data must end "
                                       "exactly at end of file",
                                       expected_begin, data_size, last));
  }
  return file;
}

absl::StatusOr<SafetensorsFile> ParseSafetensors(std::string_view file_bytes,
                                                 std::string_view source) {
  if (file_bytes.size() < 8) {
    return Invalid(source, fmt::format("file is {} bytes, too short for a safetensors header "
                                       "length",
                                       file_bytes.size()));
  }
  ASSIGN_OR_RETURN(uint64_t n, CheckHeaderLength(file_bytes.data(), file_bytes.size(), source));
  return ParseSafetensorsHeader(file_bytes.substr(8, n), file_bytes.size(), source);
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(Env* env, const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file, env->NewRandomAccessFile(path));
  uint64_t file_size = file->Size();
  if (file_size < 8) {
    return Invalid(path, fmt::format("file is {} bytes, too short for a safetensors header "
                                     "length",
                                     file_size));
  }
  char prefix[8];
  ASSIGN_OR_RETURN(size_t got, file->Read(0, 8, prefix));
  if (got != 8) return absl::DataLossError(fmt::format("{}: short read of the header", path));
  ASSIGN_OR_RETURN(uint64_t n, CheckHeaderLength(prefix, file_size, path));
  // n is bounded by kMaxSafetensorsHeaderBytes and by the file size: safe to allocate.
  std::string header(n, '\0');
  ASSIGN_OR_RETURN(got, file->Read(8, n, header.data()));
  if (got != n) return absl::DataLossError(fmt::format("{}: short read of the header", path));
  return ParseSafetensorsHeader(header, file_size, path);
}

}  // namespace loadstar::store
