// What names the store accepts, so nothing a user or a manifest says can point outside the
// store root.
//
// Model names follow SPEC §4: `[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?`. In addition no
// component may start with '.': that excludes "." and "..", and keeps names off the
// store's own entries (".tmp"). Variant keys and data file names are one such component.
//
// Thread safety: pure functions.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace loadstar::store {

// OK, or InvalidArgument naming `name` and what is wrong with it.
absl::Status ValidateModelName(std::string_view name);
absl::Status ValidateVariantKey(std::string_view key);

// One path component of [A-Za-z0-9._-], not starting with '.', at most 255 bytes.
bool IsPlainFileName(std::string_view name);

// A kept non-weight file of a model: a plain file name, or DIR/NAME with both plain
// (sentence-transformers keeps "1_Pooling/config.json"). Never absolute, never "..".
bool IsKeptFilePath(std::string_view path);

}  // namespace loadstar::store
