// Typed reads of YAML fields for config parsers, with the key path in every error and
// unknown keys rejected. Shared by the deployment and cluster/worker config parsers.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace loadstar::daemon {

// A YAML mapping being read field by field. Get* leave the output untouched when the key
// is absent or null. Finish() fails on any key nobody asked for.
class YamlMap {
 public:
  // `path` is the key path of `node` ("" for the document root).
  static absl::StatusOr<YamlMap> Open(const YAML::Node& node, std::string path);

  std::string PathOf(const std::string& key) const;
  bool Has(const std::string& key) const;
  YAML::Node Node(const std::string& key);  // marks the key known

  absl::Status GetString(const std::string& key, std::string* out);
  absl::Status GetBool(const std::string& key, bool* out);
  absl::Status GetUint(const std::string& key, uint32_t* out);
  absl::Status GetDouble(const std::string& key, double* out);
  absl::Status GetStringList(const std::string& key, std::vector<std::string>* out);
  absl::Status GetBytes(const std::string& key, uint64_t* out);  // "64GiB" or an integer
  absl::Status Finish() const;

 private:
  YAML::Node node_;
  std::string path_;
  std::set<std::string> known_;
};

// YAML -> JSON for parsers written over nlohmann::json (quant::ParseQuantizationConfig):
// plain scalars become bools or numbers when they read as such, quoted ones stay strings.
nlohmann::json YamlToJson(const YAML::Node& node);
// Emits a JSON value into a YAML emitter (mappings, sequences, scalars).
void JsonToYaml(const nlohmann::json& value, YAML::Emitter& out);

// Parses a YAML document; syntax errors carry the line and column.
absl::StatusOr<YAML::Node> LoadYaml(const std::string& text);

}  // namespace loadstar::daemon
