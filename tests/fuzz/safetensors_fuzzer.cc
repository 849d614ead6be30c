// Fuzzes the safetensors validator on whole files held in memory. Besides "never crash,
// never allocate from an unchecked size", checks an invariant: a file that validates can
// be rewritten by our writer from its tensors' bytes and validates again, identically.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "store/safetensors.h"
#include "store/safetensors_writer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loadstar::store;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<SafetensorsFile> file = ParseSafetensors(bytes, "fuzz.safetensors");
  if (!file.ok()) {
    if (file.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  std::vector<TensorInput> tensors;
  for (const SafetensorsTensor& tensor : file->tensors) {
    tensors.push_back(TensorInput::FromBytes(
        {tensor.name, tensor.dtype, tensor.shape},
        std::string(bytes.substr(file->data_offset + tensor.begin, tensor.size()))));
  }
  absl::StatusOr<std::string> rewritten = SerializeSafetensors(std::move(tensors), file->metadata);
  if (!rewritten.ok()) {
    // Names the writer refuses (empty) are the only legitimate failure.
    return 0;
  }
  absl::StatusOr<SafetensorsFile> again = ParseSafetensors(*rewritten, "rewritten");
  if (!again.ok() || again->tensors.size() != file->tensors.size() ||
      again->metadata != file->metadata) {
    std::abort();
  }
  for (const SafetensorsTensor& tensor : file->tensors) {
    const SafetensorsTensor* other = again->Find(tensor.name);
    if (other == nullptr || other->dtype != tensor.dtype || other->shape != tensor.shape ||
        rewritten->substr(again->data_offset + other->begin, other->size()) !=
            bytes.substr(file->data_offset + tensor.begin, tensor.size())) {
      std::abort();
    }
  }
  return 0;
}
