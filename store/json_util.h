// Strict JSON parsing for files loadstar reads from disk (safetensors headers, manifests,
// index files). nlohmann's parser silently keeps the last of duplicate keys; a checkpoint
// whose header names a tensor twice is ambiguous, so duplicates are an error here.
//
// Thread safety: free functions, safe to call concurrently.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace loadstar::store {

// Parses `text` without exceptions. Invalid JSON, invalid UTF-8 in strings and duplicate
// object keys (at any depth) give InvalidArgument naming `source`.
absl::StatusOr<nlohmann::json> ParseJsonStrict(std::string_view text, std::string_view source);

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points
// above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// The JSON type name of `value` ("object", "number", ...), for error messages.
std::string JsonTypeName(const nlohmann::json& value);

}  // namespace loadstar::store
