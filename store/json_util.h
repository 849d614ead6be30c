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

// Nesting deeper than this is refused before parsing (serde_json, which the reference
// safetensors reader uses, stops at 128): it keeps a hostile header from costing a deep
// recursion or a tree of millions of nested nodes.
inline constexpr int kMaxJsonDepth = 64;

// Parses `text` without exceptions. Invalid JSON, invalid UTF-8 in strings, nesting
// deeper than kMaxJsonDepth and duplicate object keys (at any depth) give InvalidArgument
// naming `source`. Memory use is proportional to the text's length.
absl::StatusOr<nlohmann::json> ParseJsonStrict(std::string_view text, std::string_view source);

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points
// above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// The JSON type name of `value` ("object", "number", ...), for error messages.
std::string JsonTypeName(const nlohmann::json& value);

// `value` for an error message: scalars as JSON text cut to about 80 characters,
// containers as their type name (never a recursive dump of untrusted input).
std::string JsonSnippet(const nlohmann::json& value);

}  // namespace loadstar::store
