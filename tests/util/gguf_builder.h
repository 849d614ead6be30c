// A small GGUF writer for tests: builds the bytes of a file field by field so tests can
// write valid files and then break exactly one field. Layout as store/gguf.h describes.
// (Files written by the reference writer, gguf-py's GGUFWriter, are tested through
// tests/data/gguf_reference.py.)
#pragma once

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace loadstar::testing {

class GgufBuilder {
 public:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;  // ggml order
    uint32_t type = 0;           // ggml type id
    std::string data;            // its bytes
    // Offset override (relative to the data section); -1: laid out by the builder.
    int64_t offset = -1;
  };

  uint32_t version = 3;
  uint32_t alignment = 32;  // where the builder places tensors (write general.alignment
                            // yourself to change what a reader expects)

  // Raw metadata helpers: each appends one KV (key, type, value bytes).
  void AddU32(const std::string& key, uint32_t v) { Kv(key, 4, Le(v, 4)); }
  void AddI32(const std::string& key, int32_t v) { Kv(key, 5, Le(static_cast<uint32_t>(v), 4)); }
  void AddF32(const std::string& key, float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    Kv(key, 6, Le(bits, 4));
  }
  void AddString(const std::string& key, const std::string& v) { Kv(key, 8, Str(v)); }
  void AddStringArray(const std::string& key, const std::vector<std::string>& items) {
    std::string body = Le(8, 4) + Le(items.size(), 8);
    for (const std::string& s : items) body += Str(s);
    Kv(key, 9, body);
  }
  void AddI32Array(const std::string& key, const std::vector<int32_t>& items) {
    std::string body = Le(5, 4) + Le(items.size(), 8);
    for (int32_t v : items) body += Le(static_cast<uint32_t>(v), 4);
    Kv(key, 9, body);
  }
  // Any KV, value bytes as given (for malformed values).
  void AddRaw(const std::string& key, uint32_t type, const std::string& value_bytes) {
    Kv(key, type, value_bytes);
  }
  void AddTensor(Tensor t) { tensors_.push_back(std::move(t)); }

  // Counts written in the header; -1: the real counts.
  int64_t tensor_count_override = -1;
  int64_t kv_count_override = -1;

  std::string Build() const {
    std::string out = Le(0x46554747u, 4) + Le(version, 4);
    out += Le(tensor_count_override >= 0 ? static_cast<uint64_t>(tensor_count_override)
                                         : tensors_.size(),
              8);
    out += Le(kv_count_override >= 0 ? static_cast<uint64_t>(kv_count_override) : kv_count_,
              8);
    out += kvs_;
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const Tensor& t : tensors_) {
      uint64_t off = t.offset >= 0 ? static_cast<uint64_t>(t.offset) : next;
      offsets.push_back(off);
      // A far-away explicit offset (a test of "past EOF") gets no bytes written.
      if (off + t.data.size() < (uint64_t{1} << 30)) next = std::max(next, Pad(off + t.data.size()));
      out += Str(t.name) + Le(t.dims.size(), 4);
      for (uint64_t d : t.dims) out += Le(d, 8);
      out += Le(t.type, 4) + Le(off, 8);
    }
    out.resize(Pad(out.size()), '\0');
    const size_t data_start = out.size();
    out.resize(data_start + next, '\0');
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const std::string& d = tensors_[i].data;
      if (data_start + offsets[i] + d.size() <= out.size()) {
        std::memcpy(out.data() + data_start + offsets[i], d.data(), d.size());
      }
    }
    return out;
  }

  static std::string Le(uint64_t v, int bytes) {
    std::string s;
    for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    return s;
  }
  static std::string Str(const std::string& s) { return Le(s.size(), 8) + s; }

 private:
  void Kv(const std::string& key, uint32_t type, const std::string& value) {
    kvs_ += Str(key) + Le(type, 4) + value;
    ++kv_count_;
  }
  uint64_t Pad(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }

  std::string kvs_;
  uint64_t kv_count_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace loadstar::testing
