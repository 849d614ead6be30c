// A small GGUF writer for tests: builds the bytes of a file field by field so tests can
// write valid files and then break exactly one field. Layout as store/gguf.h describes.
// (Files written by the reference writer, gguf-py's GGUFWriter, are tested through
// tests/data/gguf_reference.py.)
#pragma once

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <string>
#include <random>
#include <vector>

#include "quant/float16.h"
#include "quant/ggml_types.h"

namespace loadstar::testing {

// `blocks` random blocks of a ggml type: random bytes with every fp16 scale field set to a
// finite value (any such bytes are valid blocks); F32/F16/BF16 get finite values.
inline std::string RandomGgmlBlocks(quant::GgmlType type, int64_t blocks, uint32_t seed) {
  using quant::GgmlType;
  const quant::GgmlTypeInfo info = quant::GgmlInfo(type);
  std::vector<int> scale_fields;  // byte offsets of the fp16 fields (gguf/quants.py)
  switch (type) {
    case GgmlType::kQ8_0: case GgmlType::kQ4_0: case GgmlType::kQ5_0: scale_fields = {0}; break;
    case GgmlType::kQ4_1: case GgmlType::kQ5_1: scale_fields = {0, 2}; break;
    case GgmlType::kQ2_K: scale_fields = {80, 82}; break;
    case GgmlType::kQ3_K: scale_fields = {108}; break;
    case GgmlType::kQ4_K: case GgmlType::kQ5_K: scale_fields = {0, 2}; break;
    case GgmlType::kQ6_K: scale_fields = {208}; break;
    case GgmlType::kF16: case GgmlType::kBF16: scale_fields = {0}; break;
    case GgmlType::kF32: break;
  }
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::string bytes(static_cast<size_t>(blocks * info.block_bytes), '\0');
  for (char& b : bytes) b = static_cast<char>(rng());
  for (int64_t b = 0; b < blocks; ++b) {
    char* block = bytes.data() + b * info.block_bytes;
    if (type == GgmlType::kF32) {
      float v = normal(rng);
      std::memcpy(block, &v, 4);
      continue;
    }
    for (int off : scale_fields) {
      uint16_t h = type == GgmlType::kBF16 ? FloatToBFloat16Bits(normal(rng))
                                           : FloatToHalfBits(normal(rng));
      block[off] = static_cast<char>(h & 0xFF);
      block[off + 1] = static_cast<char>(h >> 8);
    }
  }
  return bytes;
}

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

namespace loadstar::testing {

// A one-layer llama-architecture GGUF (hidden 256, 4 heads, 2 kv heads, vocab 11, ffn 512)
// with a different block type per tensor and random valid blocks, plus llama 3's
// rope_freqs (which the store drops). Tensor names as llama.cpp writes them.
inline GgufBuilder TinyLlamaGguf(uint32_t seed = 1) {
  using quant::GgmlType;
  GgufBuilder b;
  b.AddString("general.architecture", "llama");
  b.AddString("general.name", "tiny");
  b.AddU32("llama.block_count", 1);
  b.AddU32("llama.context_length", 128);
  b.AddU32("llama.embedding_length", 256);
  b.AddU32("llama.feed_forward_length", 512);
  b.AddU32("llama.attention.head_count", 4);
  b.AddU32("llama.attention.head_count_kv", 2);
  b.AddU32("llama.rope.dimension_count", 64);
  b.AddF32("llama.rope.freq_base", 10000.0f);
  b.AddF32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.AddStringArray("tokenizer.ggml.tokens",
                   {"<unk>", "<s>", "</s>", "a", "b", "c", "d", "e", "f", "g", "h"});
  struct T {
    const char* name;
    std::vector<uint64_t> dims;
    GgmlType type;
  };
  const T tensors[] = {
      {"token_embd.weight", {256, 11}, GgmlType::kQ8_0},
      {"rope_freqs.weight", {32}, GgmlType::kF32},
      {"blk.0.attn_norm.weight", {256}, GgmlType::kF32},
      {"blk.0.attn_q.weight", {256, 256}, GgmlType::kQ4_K},
      {"blk.0.attn_k.weight", {256, 128}, GgmlType::kQ6_K},
      {"blk.0.attn_v.weight", {256, 128}, GgmlType::kQ5_0},
      {"blk.0.attn_output.weight", {256, 256}, GgmlType::kQ2_K},
      {"blk.0.ffn_norm.weight", {256}, GgmlType::kBF16},
      {"blk.0.ffn_gate.weight", {256, 512}, GgmlType::kQ5_K},
      {"blk.0.ffn_up.weight", {256, 512}, GgmlType::kQ4_1},
      {"blk.0.ffn_down.weight", {512, 256}, GgmlType::kQ3_K},
      {"output_norm.weight", {256}, GgmlType::kF16},
      {"output.weight", {256, 11}, GgmlType::kQ5_1},
  };
  uint32_t s = seed;
  for (const T& t : tensors) {
    const quant::GgmlTypeInfo info = quant::GgmlInfo(t.type);
    uint64_t elems = 1;
    for (uint64_t d : t.dims) elems *= d;
    b.AddTensor({t.name, t.dims, static_cast<uint32_t>(t.type),
                 RandomGgmlBlocks(t.type, static_cast<int64_t>(elems / info.block_elems), s++)});
  }
  return b;
}

}  // namespace loadstar::testing
