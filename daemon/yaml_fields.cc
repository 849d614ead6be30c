#include "daemon/yaml_fields.h"

#include <algorithm>
#include <string_view>

#include <fmt/format.h>

#include "daemon/deployment_config.h"

namespace loadstar::daemon {
namespace {

std::string Scalar(const YAML::Node& node) {
  return node.IsScalar() ? node.Scalar() : std::string("a non-scalar value");
}

absl::Status TypeError(const std::string& path, const char* expected, const YAML::Node& node) {
  return absl::InvalidArgumentError(
      fmt::format("{}: expected {}, got '{}'", path, expected, Scalar(node)));
}

// Offset of the first byte that does not belong to a well-formed UTF-8 sequence (no
// overlongs, surrogates or code points past U+10FFFF), or npos.
size_t FirstInvalidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += len;
  }
  return std::string_view::npos;
}

}  // namespace

nlohmann::json YamlToJson(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return nullptr;
  if (node.IsMap()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& entry : node) j[entry.first.Scalar()] = YamlToJson(entry.second);
    return j;
  }
  if (node.IsSequence()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& item : node) j.push_back(YamlToJson(item));
    return j;
  }
  if (node.Tag() == "!") return node.Scalar();  // quoted: a string whatever it reads like
  int64_t i;
  double d;
  bool b;
  if (YAML::convert<int64_t>::decode(node, i)) return i;
  if (YAML::convert<double>::decode(node, d)) return d;
  const std::string& s = node.Scalar();
  if ((s == "true" || s == "false" || s == "True" || s == "False") &&
      YAML::convert<bool>::decode(node, b)) {
    return b;
  }
  return s;
}

void JsonToYaml(const nlohmann::json& value, YAML::Emitter& out) {
  if (value.is_object()) {
    out << YAML::BeginMap;
    for (const auto& [k, v] : value.items()) {
      out << YAML::Key << k << YAML::Value;
      JsonToYaml(v, out);
    }
    out << YAML::EndMap;
  } else if (value.is_array()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& v : value) JsonToYaml(v, out);
    out << YAML::EndSeq;
  } else if (value.is_string()) {
    out << value.get<std::string>();
  } else if (value.is_boolean()) {
    out << value.get<bool>();
  } else if (value.is_number_integer()) {
    out << value.get<int64_t>();
  } else if (value.is_number()) {
    out << value.get<double>();
  } else {
    out << YAML::Null;
  }
}

absl::StatusOr<YAML::Node> LoadYaml(const std::string& text) {
  // YAML is Unicode text; refusing other bytes here keeps them out of every string a
  // config carries on (error messages dumped as JSON, protobuf string fields).
  if (size_t bad = FirstInvalidUtf8(text); bad != std::string::npos) {
    const size_t line_start = text.rfind('\n', bad);
    const size_t line = std::count(text.begin(), text.begin() + bad, '\n') + 1;
    const size_t column = bad - (line_start == std::string::npos ? 0 : line_start + 1) + 1;
    return absl::InvalidArgumentError(
        fmt::format("invalid YAML at line {}, column {}: not UTF-8", line, column));
  }
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(fmt::format("invalid YAML at line {}, column {}: {}",
                                                  e.mark.line + 1, e.mark.column + 1, e.msg));
  }
}

absl::StatusOr<YamlMap> YamlMap::Open(const YAML::Node& node, std::string path) {
  if (node.IsDefined() && !node.IsMap() && !node.IsNull()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: expected a mapping", path.empty() ? "document" : path));
  }
  YamlMap map;
  // A missing key yields an invalid node, which yaml-cpp refuses to assign: keep null.
  if (node.IsDefined()) map.node_ = node;
  map.path_ = std::move(path);
  return map;
}

std::string YamlMap::PathOf(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

bool YamlMap::Has(const std::string& key) const {
  const YAML::Node& n = node_;  // const: lookups must not insert keys
  return n.IsMap() && n[key] && !n[key].IsNull();
}

YAML::Node YamlMap::Node(const std::string& key) {
  known_.insert(key);
  const YAML::Node& n = node_;
  if (!n.IsDefined() || !n.IsMap()) return YAML::Node();
  return n[key];
}

absl::Status YamlMap::GetString(const std::string& key, std::string* out) {
  YAML::Node n = Node(key);
  if (!n || n.IsNull()) return absl::OkStatus();
  if (!n.IsScalar()) return TypeError(PathOf(key), "a string", n);
  *out = n.Scalar();
  return absl::OkStatus();
}

absl::Status YamlMap::GetBool(const std::string& key, bool* out) {
  YAML::Node n = Node(key);
  if (!n || n.IsNull()) return absl::OkStatus();
  bool value;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, value)) {
    return TypeError(PathOf(key), "true or false", n);
  }
  *out = value;
  return absl::OkStatus();
}

absl::Status YamlMap::GetUint(const std::string& key, uint32_t* out) {
  YAML::Node n = Node(key);
  if (!n || n.IsNull()) return absl::OkStatus();
  int64_t value;
  if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, value)) {
    return TypeError(PathOf(key), "an integer", n);
  }
  if (value < 0 || value > UINT32_MAX) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} is out of range (0..{})", PathOf(key), value, UINT32_MAX));
  }
  *out = static_cast<uint32_t>(value);
  return absl::OkStatus();
}

absl::Status YamlMap::GetDouble(const std::string& key, double* out) {
  YAML::Node n = Node(key);
  if (!n || n.IsNull()) return absl::OkStatus();
  double value;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, value)) {
    return TypeError(PathOf(key), "a number", n);
  }
  *out = value;
  return absl::OkStatus();
}

absl::Status YamlMap::GetStringList(const std::string& key, std::vector<std::string>* out) {
  YAML::Node n = Node(key);
  if (!n || n.IsNull()) return absl::OkStatus();
  if (!n.IsSequence()) return TypeError(PathOf(key), "a list", n);
  out->clear();
  for (size_t i = 0; i < n.size(); ++i) {
    if (!n[i].IsScalar()) {
      return TypeError(fmt::format("{}[{}]", PathOf(key), i), "a string", n[i]);
    }
    out->push_back(n[i].Scalar());
  }
  return absl::OkStatus();
}

absl::Status YamlMap::GetBytes(const std::string& key, uint64_t* out) {
  YAML::Node n = Node(key);
  if (!n || n.IsNull()) return absl::OkStatus();
  if (!n.IsScalar()) return TypeError(PathOf(key), "a size like 20GiB", n);
  auto bytes = ParseByteSize(n.Scalar(), PathOf(key));
  if (!bytes.ok()) return bytes.status();
  *out = *bytes;
  return absl::OkStatus();
}

absl::Status YamlMap::Finish() const {
  if (!node_.IsDefined() || !node_.IsMap()) return absl::OkStatus();
  for (const auto& entry : node_) {
    std::string key = entry.first.IsScalar() ? entry.first.Scalar() : "?";
    if (!known_.contains(key)) {
      return absl::InvalidArgumentError(fmt::format("{}: unknown key", PathOf(key)));
    }
  }
  return absl::OkStatus();
}

}  // namespace loadstar::daemon
