#include "store/names.h"

#include <fmt/format.h>

namespace loadstar::store {
namespace {

bool IsNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-';
}

}  // namespace

bool IsPlainFileName(std::string_view name) {
  if (name.empty() || name.size() > 255 || name.front() == '.') return false;
  for (char c : name) {
    if (!IsNameChar(c)) return false;
  }
  return true;
}

bool IsKeptFilePath(std::string_view path) {
  size_t slash = path.find('/');
  if (slash == std::string_view::npos) return IsPlainFileName(path);
  return IsPlainFileName(path.substr(0, slash)) && IsPlainFileName(path.substr(slash + 1));
}

absl::Status ValidateModelName(std::string_view name) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(fmt::format(
        "invalid model name \"{}\": {} (expected NAME or ORG/NAME of [A-Za-z0-9._-], no "
        "component starting with '.')",
        name, why));
  };
  if (name.empty()) return bad("empty");
  size_t slash = name.find('/');
  std::string_view first = name.substr(0, slash);
  if (!IsPlainFileName(first)) return bad("bad component");
  if (slash != std::string_view::npos) {
    std::string_view second = name.substr(slash + 1);
    if (second.find('/') != std::string_view::npos) return bad("more than one '/'");
    if (!IsPlainFileName(second)) return bad("bad component");
  }
  return absl::OkStatus();
}

absl::Status ValidateVariantKey(std::string_view key) {
  if (!IsPlainFileName(key)) {
    return absl::InvalidArgumentError(fmt::format(
        "invalid variant key \"{}\": expected one component of [A-Za-z0-9._-] not starting "
        "with '.'",
        key));
  }
  return absl::OkStatus();
}

}  // namespace loadstar::store
