// Fuzzes the GGUF validator (store/gguf.h) on whole files held in memory: never crash,
// never allocate from an unchecked count or length, only InvalidArgument for bad input.
// For a file that validates, checks the invariants the store relies on: every tensor lies
// inside the file, no two overlap, and dequantizing every tensor's bytes stays inside them
// (ASan would catch a block read past the end).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "quant/ggml_dequant.h"
#include "store/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loadstar;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<store::GgufFile> file = store::ParseGguf(bytes, "fuzz.gguf");
  if (!file.ok()) {
    if (file.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (file->data_offset % file->alignment != 0) std::abort();
  if (!file->tensors.empty() && file->data_offset > size) std::abort();
  for (const store::GgufTensor& t : file->tensors) {
    if (file->data_offset + t.offset + t.size > size) std::abort();
    const quant::GgmlTypeInfo info = quant::GgmlInfo(t.type);
    if (t.size % info.block_bytes != 0) std::abort();
    const int64_t blocks = static_cast<int64_t>(t.size / info.block_bytes);
    std::vector<float> out(static_cast<size_t>(blocks) * info.block_elems);
    const auto* in = data + file->data_offset + t.offset;
    quant::DequantizeGgmlRef(t.type, in, blocks, out.data());
    quant::DequantizeGgml(t.type, in, blocks, out.data());
  }
  return 0;
}
