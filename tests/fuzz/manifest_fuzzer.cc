// Fuzzes ParseManifest. Invariant: whatever parses serializes back to text that parses
// to an equal manifest.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "store/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loadstar::store;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<Manifest> manifest = ParseManifest(text, "fuzz.json");
  if (!manifest.ok()) {
    if (manifest.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  absl::StatusOr<Manifest> again = ParseManifest(SerializeManifest(*manifest), "again.json");
  if (!again.ok() || !(*again == *manifest)) std::abort();
  return 0;
}
