// Fuzzes ParsePrequantInfo (store/prequant_info.h): prequant.json, which a stored
// pre-quantized model (GGUF, GPTQ/AWQ, saved bitsandbytes) carries and every load reads.
// Invariants: bad input is INVALID_ARGUMENT, never a crash; what parses serializes back to
// text that parses to an equal PrequantInfo.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "store/prequant_info.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loadstar::store;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<PrequantInfo> info = ParsePrequantInfo(text, "prequant.json");
  if (!info.ok()) {
    FUZZ_CHECK(info.status().code() == absl::StatusCode::kInvalidArgument, "{}",
               info.status().ToString());
    return 0;
  }
  const std::string again_text = SerializePrequantInfo(*info);
  absl::StatusOr<PrequantInfo> again = ParsePrequantInfo(again_text, "again.json");
  FUZZ_CHECK(again.ok(), "serialized info does not parse: {}\n{}", again.status().ToString(),
             again_text);
  FUZZ_CHECK(*again == *info, "round trip changed it:\n{}", again_text);
  return 0;
}
