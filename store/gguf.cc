#include "store/gguf.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "store/json_util.h"

namespace loadstar::store {
namespace {

// Smallest encodings, used to bound counts by the bytes left before allocating:
// a kv is a key length (8) + value type (4) + at least one value byte; a tensor info is a
// name length (8) + n_dims (4) + type (4) + offset (8).
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;
// The header is read through a window of this many bytes (a tokenizer vocabulary is a
// few MiB of metadata; tensor bytes are never read).
constexpr size_t kWindowBytes = 1 << 20;

using ReadFn = std::function<absl::StatusOr<size_t>(uint64_t offset, size_t n, char* dst)>;

// Sequential reader of the header with bounds checks: every read names what it reads.
class Cursor {
 public:
  Cursor(ReadFn read, uint64_t size, std::string source)
      : read_(std::move(read)), size_(size), source_(std::move(source)) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  const std::string& source() const { return source_; }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(fmt::format("{}: {}", source_, what));
  }

  absl::Status Bytes(void* dst, uint64_t n, std::string_view what) {
    if (n > left()) {
      return Error(fmt::format("truncated: {} needs {} bytes at offset {} but the file has {} "
                               "bytes",
                               what, n, pos_, size_));
    }
    char* out = static_cast<char*>(dst);
    while (n > 0) {
      if (pos_ < window_start_ || pos_ >= window_start_ + window_.size()) {
        RETURN_IF_ERROR(Fill());
      }
      uint64_t in_window = window_start_ + window_.size() - pos_;
      size_t take = static_cast<size_t>(std::min<uint64_t>(n, in_window));
      std::memcpy(out, window_.data() + (pos_ - window_start_), take);
      out += take, pos_ += take, n -= take;
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Scalar(std::string_view what) {
    unsigned char bytes[sizeof(T)];
    RETURN_IF_ERROR(Bytes(bytes, sizeof(T), what));
    // GGUF is little-endian; assemble explicitly so the host's order does not matter.
    uint64_t v = 0;
    for (size_t i = sizeof(T); i-- > 0;) v = (v << 8) | bytes[i];
    T out;
    if constexpr (sizeof(T) == 8) {
      std::memcpy(&out, &v, 8);
    } else {
      auto narrow = static_cast<std::conditional_t<sizeof(T) == 4, uint32_t,
                                                   std::conditional_t<sizeof(T) == 2, uint16_t,
                                                                      uint8_t>>>(v);
      std::memcpy(&out, &narrow, sizeof(T));
    }
    return out;
  }

  absl::StatusOr<std::string> String(std::string_view what) {
    ASSIGN_OR_RETURN(uint64_t n, Scalar<uint64_t>(fmt::format("{} length", what)));
    if (n > left()) {
      return Error(fmt::format("{}: string length {} exceeds the {} bytes left in the file",
                               what, n, left()));
    }
    std::string s(static_cast<size_t>(n), '\0');  // bounded by the file size above
    RETURN_IF_ERROR(Bytes(s.data(), n, what));
    return s;
  }

 private:
  absl::Status Fill() {
    window_start_ = pos_;
    size_t n = static_cast<size_t>(std::min<uint64_t>(kWindowBytes, size_ - pos_));
    window_.resize(n);
    ASSIGN_OR_RETURN(size_t got, read_(pos_, n, window_.data()));
    if (got != n) {
      return absl::DataLossError(fmt::format("{}: short read at offset {}", source_, pos_));
    }
    return absl::OkStatus();
  }

  ReadFn read_;
  uint64_t size_;
  std::string source_;
  uint64_t pos_ = 0;
  uint64_t window_start_ = 0;
  std::string window_;
};

std::optional<uint64_t> ScalarBytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    case GgufValueType::kString:
      return 8;  // at least its length
    case GgufValueType::kArray:
      return std::nullopt;
  }
  return std::nullopt;
}

bool KnownValueType(uint32_t raw) { return raw <= static_cast<uint32_t>(GgufValueType::kF64); }

// Reads one scalar of `type` into `value`.
absl::Status ReadScalar(Cursor& c, GgufValueType type, const std::string& what,
                        GgufValue& value) {
  switch (type) {
    case GgufValueType::kU8: {
      ASSIGN_OR_RETURN(uint8_t v, c.Scalar<uint8_t>(what));
      value.ints.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kI8: {
      ASSIGN_OR_RETURN(int8_t v, c.Scalar<int8_t>(what));
      value.ints.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kBool: {
      ASSIGN_OR_RETURN(uint8_t v, c.Scalar<uint8_t>(what));
      if (v > 1) return c.Error(fmt::format("{}: bool value {} is neither 0 nor 1", what, v));
      value.ints.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kU16: {
      ASSIGN_OR_RETURN(uint16_t v, c.Scalar<uint16_t>(what));
      value.ints.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kI16: {
      ASSIGN_OR_RETURN(int16_t v, c.Scalar<int16_t>(what));
      value.ints.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kU32: {
      ASSIGN_OR_RETURN(uint32_t v, c.Scalar<uint32_t>(what));
      value.ints.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kI32: {
      ASSIGN_OR_RETURN(int32_t v, c.Scalar<int32_t>(what));
      value.ints.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kU64: {
      ASSIGN_OR_RETURN(uint64_t v, c.Scalar<uint64_t>(what));
      value.u64_bits.push_back(v);
      value.ints.push_back(static_cast<int64_t>(std::min<uint64_t>(v, INT64_MAX)));
      return absl::OkStatus();
    }
    case GgufValueType::kI64: {
      ASSIGN_OR_RETURN(int64_t v, c.Scalar<int64_t>(what));
      value.ints.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kF32: {
      ASSIGN_OR_RETURN(float v, c.Scalar<float>(what));
      value.floats.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kF64: {
      ASSIGN_OR_RETURN(double v, c.Scalar<double>(what));
      value.floats.push_back(v);
      return absl::OkStatus();
    }
    case GgufValueType::kString: {
      ASSIGN_OR_RETURN(std::string s, c.String(what));
      value.strings.push_back(std::move(s));
      return absl::OkStatus();
    }
    case GgufValueType::kArray:
      break;
  }
  return c.Error(fmt::format("{}: unexpected value type", what));
}

absl::StatusOr<GgufValue> ReadValue(Cursor& c, const std::string& what) {
  ASSIGN_OR_RETURN(uint32_t raw, c.Scalar<uint32_t>(what + " type"));
  if (!KnownValueType(raw)) return c.Error(fmt::format("{}: unknown value type {}", what, raw));
  GgufValue value;
  value.type = value.elem_type = static_cast<GgufValueType>(raw);
  if (value.type != GgufValueType::kArray) {
    RETURN_IF_ERROR(ReadScalar(c, value.type, what, value));
    return value;
  }
  ASSIGN_OR_RETURN(uint32_t elem, c.Scalar<uint32_t>(what + " array element type"));
  if (!KnownValueType(elem)) {
    return c.Error(fmt::format("{}: unknown array element type {}", what, elem));
  }
  value.elem_type = static_cast<GgufValueType>(elem);
  if (value.elem_type == GgufValueType::kArray) {
    return c.Error(fmt::format("{}: arrays of arrays are not supported", what));
  }
  ASSIGN_OR_RETURN(uint64_t count, c.Scalar<uint64_t>(what + " array count"));
  const uint64_t min_bytes = *ScalarBytes(value.elem_type);
  if (count > c.left() / min_bytes) {
    return c.Error(fmt::format("{}: array count {} of {} needs more than the {} bytes left in "
                               "the file",
                               what, count, GgufValueTypeName(value.elem_type), c.left()));
  }
  for (uint64_t i = 0; i < count; ++i) {
    RETURN_IF_ERROR(ReadScalar(c, value.elem_type, what, value));
  }
  return value;
}

absl::StatusOr<GgufTensor> ReadTensorInfo(Cursor& c, uint64_t index) {
  GgufTensor t;
  std::string what = fmt::format("tensor {}", index);
  ASSIGN_OR_RETURN(t.name, c.String(what + " name"));
  if (t.name.empty()) return c.Error(what + ": empty name");
  if (!IsValidUtf8(t.name)) return c.Error(what + ": name is not valid UTF-8");
  what = fmt::format("tensor {} (\"{}\")", index, t.name);
  ASSIGN_OR_RETURN(uint32_t n_dims, c.Scalar<uint32_t>(what + " n_dims"));
  if (n_dims < 1 || n_dims > kGgufMaxDims) {
    return c.Error(fmt::format("{}: n_dims {} is not in 1..{}", what, n_dims, kGgufMaxDims));
  }
  for (uint32_t d = 0; d < n_dims; ++d) {
    ASSIGN_OR_RETURN(uint64_t dim, c.Scalar<uint64_t>(what + " dims"));
    if (dim > static_cast<uint64_t>(INT64_MAX)) {
      return c.Error(fmt::format("{}: dimension {} is {}, too large", what, d, dim));
    }
    t.dims.push_back(static_cast<int64_t>(dim));
  }
  ASSIGN_OR_RETURN(uint32_t type, c.Scalar<uint32_t>(what + " type"));
  std::optional<quant::GgmlTypeInfo> info = quant::SupportedGgmlType(type);
  if (!info) {
    std::string_view name = quant::GgmlTypeIdName(type);
    if (name.empty()) {
      return c.Error(fmt::format("{}: unknown ggml type {}", what, type));
    }
    return c.Error(fmt::format("{}: ggml type {} ({}) is not supported (supported: {})", what,
                               name, type, quant::SupportedGgmlTypeList()));
  }
  t.type = info->type;
  ASSIGN_OR_RETURN(t.offset, c.Scalar<uint64_t>(what + " offset"));

  // Size: the row is whole blocks; rows x bytes per row must not overflow.
  if (t.dims[0] % info->block_elems != 0) {
    return c.Error(fmt::format("{}: row length {} is not a multiple of the {} block size {}",
                               what, t.dims[0], info->name, info->block_elems));
  }
  unsigned __int128 size = static_cast<unsigned __int128>(t.dims[0] / info->block_elems) *
                           static_cast<unsigned>(info->block_bytes);
  for (size_t d = 1; d < t.dims.size(); ++d) {
    size *= static_cast<uint64_t>(t.dims[d]);
    if (size > static_cast<unsigned __int128>(INT64_MAX)) {
      return c.Error(fmt::format("{}: byte size of dims overflows", what));
    }
  }
  if (size > static_cast<unsigned __int128>(INT64_MAX)) {
    return c.Error(fmt::format("{}: byte size of dims overflows", what));
  }
  t.size = static_cast<uint64_t>(size);
  return t;
}

absl::StatusOr<GgufFile> Parse(ReadFn read, uint64_t file_size, std::string source) {
  Cursor c(std::move(read), file_size, source);
  GgufFile file;
  file.path = source;
  file.file_size = file_size;
  ASSIGN_OR_RETURN(uint32_t magic, c.Scalar<uint32_t>("magic"));
  if (magic != kGgufMagic) {
    return c.Error(fmt::format("not a GGUF file (magic 0x{:08x}, expected \"GGUF\")", magic));
  }
  ASSIGN_OR_RETURN(file.version, c.Scalar<uint32_t>("version"));
  if (file.version != 2 && file.version != 3) {
    return c.Error(fmt::format("GGUF version {} is not supported (2 or 3)", file.version));
  }
  ASSIGN_OR_RETURN(uint64_t tensor_count, c.Scalar<uint64_t>("tensor_count"));
  ASSIGN_OR_RETURN(uint64_t kv_count, c.Scalar<uint64_t>("kv_count"));
  if (kv_count > c.left() / kMinKvBytes) {
    return c.Error(fmt::format("kv_count {} needs more than the {} bytes left in the file",
                               kv_count, c.left()));
  }
  if (tensor_count > c.left() / kMinTensorInfoBytes) {
    return c.Error(fmt::format("tensor_count {} needs more than the {} bytes left in the file",
                               tensor_count, c.left()));
  }
  for (uint64_t i = 0; i < kv_count; ++i) {
    ASSIGN_OR_RETURN(std::string key, c.String(fmt::format("metadata key {}", i)));
    if (key.empty() || !IsValidUtf8(key)) {
      return c.Error(fmt::format("metadata key {}: empty or not valid UTF-8", i));
    }
    std::string what = fmt::format("metadata key {} (\"{}\")", i, key);
    ASSIGN_OR_RETURN(GgufValue value, ReadValue(c, what));
    if (!file.metadata.emplace(key, std::move(value)).second) {
      return c.Error(fmt::format("{}: duplicate key", what));
    }
  }
  file.metadata_end = c.pos();
  if (const GgufValue* align = file.Get("general.alignment")) {
    if (align->type != GgufValueType::kU32) {
      return c.Error(fmt::format("general.alignment must be a u32, not {}",
                                 GgufValueTypeName(align->type)));
    }
    int64_t a = align->ints[0];
    if (a == 0 || (a & (a - 1)) != 0) {
      return c.Error(fmt::format("general.alignment {} is not a power of two", a));
    }
    file.alignment = static_cast<uint32_t>(a);
  }
  std::set<std::string> names;
  for (uint64_t i = 0; i < tensor_count; ++i) {
    ASSIGN_OR_RETURN(GgufTensor t, ReadTensorInfo(c, i));
    if (!names.insert(t.name).second) {
      return c.Error(fmt::format("tensor {} (\"{}\"): duplicate name", i, t.name));
    }
    if (t.offset % file.alignment != 0) {
      return c.Error(fmt::format("tensor {} (\"{}\"): offset {} is not a multiple of the "
                                 "alignment {}",
                                 i, t.name, t.offset, file.alignment));
    }
    file.tensors.push_back(std::move(t));
  }
  uint64_t pos = c.pos();
  file.data_offset = (pos + file.alignment - 1) / file.alignment * file.alignment;
  // A file without tensors may end before the padding (found by the fuzzer); its
  // (aligned) data_offset then lies past the end and nothing is ever read there.
  if (file.data_offset > file_size && !file.tensors.empty()) {
    return c.Error(fmt::format("truncated: the data section would start at {} but the file "
                               "has {} bytes",
                               file.data_offset, file_size));
  }
  const uint64_t data_size = file_size > file.data_offset ? file_size - file.data_offset : 0;
  // Each tensor inside the file; sorted by offset, none overlapping the next.
  std::vector<const GgufTensor*> order;
  for (const GgufTensor& t : file.tensors) {
    if (t.offset > data_size || t.size > data_size - t.offset) {
      const uint64_t reach = t.offset + std::min(t.size, UINT64_MAX - t.offset);
      return c.Error(fmt::format("tensor \"{}\": bytes [{}, {}) of the data section run past "
                                 "the end of the file (data section holds {} bytes)",
                                 t.name, t.offset, reach, data_size));
    }
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(), [](const GgufTensor* a, const GgufTensor* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->size < b->size;
  });
  uint64_t end = 0;
  const GgufTensor* prev = nullptr;
  for (const GgufTensor* t : order) {
    if (prev != nullptr && t->offset < end) {
      return c.Error(fmt::format("tensor \"{}\" at [{}, {}) overlaps tensor \"{}\" at [{}, {})",
                                 t->name, t->offset, t->offset + t->size, prev->name,
                                 prev->offset, end));
    }
    end = t->offset + t->size;
    prev = t;
  }
  // The writer pads the last tensor to the alignment; anything more is not GGUF.
  uint64_t padded_end = (end + file.alignment - 1) / file.alignment * file.alignment;
  if (data_size > padded_end) {
    return c.Error(fmt::format("{} bytes after the last tensor's data (at most {} bytes of "
                               "padding allowed)",
                               data_size - end, padded_end - end));
  }
  return file;
}

}  // namespace

std::string_view GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kU8: return "u8";
    case GgufValueType::kI8: return "i8";
    case GgufValueType::kU16: return "u16";
    case GgufValueType::kI16: return "i16";
    case GgufValueType::kU32: return "u32";
    case GgufValueType::kI32: return "i32";
    case GgufValueType::kF32: return "f32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kU64: return "u64";
    case GgufValueType::kI64: return "i64";
    case GgufValueType::kF64: return "f64";
  }
  return "?";
}

size_t GgufValue::count() const { return ints.size() + floats.size() + strings.size(); }

std::vector<int64_t> GgufTensor::TorchShape() const {
  return std::vector<int64_t>(dims.rbegin(), dims.rend());
}

int64_t GgufTensor::rows() const {
  int64_t r = 1;
  for (size_t d = 1; d < dims.size(); ++d) r *= dims[d];
  return r;
}

const GgufTensor* GgufFile::Find(std::string_view name) const {
  for (const GgufTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const GgufValue* GgufFile::Get(std::string_view key) const {
  auto it = metadata.find(std::string(key));
  return it == metadata.end() ? nullptr : &it->second;
}

std::optional<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Get(key);
  if (v == nullptr || v->is_array() || v->ints.size() != 1) return std::nullopt;
  return v->ints[0];
}

std::optional<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Get(key);
  if (v == nullptr || v->is_array()) return std::nullopt;
  if (v->floats.size() == 1) return v->floats[0];
  if (v->ints.size() == 1) return static_cast<double>(v->ints[0]);
  return std::nullopt;
}

std::optional<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Get(key);
  if (v == nullptr || v->is_array() || v->strings.size() != 1) return std::nullopt;
  return v->strings[0];
}

absl::StatusOr<GgufFile> ParseGguf(std::string_view file_bytes, std::string_view source) {
  ReadFn read = [file_bytes](uint64_t offset, size_t n, char* dst) -> absl::StatusOr<size_t> {
    if (offset >= file_bytes.size()) return 0;
    size_t take = std::min<size_t>(n, file_bytes.size() - offset);
    std::memcpy(dst, file_bytes.data() + offset, take);
    return take;
  };
  return Parse(std::move(read), file_bytes.size(), std::string(source));
}

absl::StatusOr<GgufFile> ReadGguf(Env* env, const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file, env->NewRandomAccessFile(path));
  std::shared_ptr<RandomAccessFile> shared = std::move(file);
  ReadFn read = [shared](uint64_t offset, size_t n, char* dst) {
    return shared->Read(offset, n, dst);
  };
  return Parse(std::move(read), shared->Size(), path);
}

bool LooksLikeGguf(Env* env, const std::string& path) {
  if (env->IsDirectory(path)) return false;
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> file = env->NewRandomAccessFile(path);
  if (!file.ok() || (*file)->Size() < 4) return false;
  char magic[4];
  absl::StatusOr<size_t> got = (*file)->Read(0, 4, magic);
  return got.ok() && *got == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace loadstar::store
