#include "daemon/deployment_config.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>

#include "nlohmann/json.hpp"

#include "base/status_macros.h"
#include "daemon/yaml_fields.h"
#include "store/names.h"
#include <xxhash.h>

namespace loadstar::daemon {
namespace {

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(fmt::format("{}: {}", path, what));
}

absl::Status ParseBackendConfig(const YAML::Node& node, DeploymentConfig* c,
                                bool* has_quant_config) {
  ASSIGN_OR_RETURN(YamlMap m, YamlMap::Open(node, "backend_config"));
  RETURN_IF_ERROR(m.GetString("torch_dtype", &c->torch_dtype));
  if (!c->torch_dtype.empty() && c->torch_dtype != "float16" && c->torch_dtype != "bfloat16" &&
      c->torch_dtype != "float32" && c->torch_dtype != "auto") {
    return Invalid(m.PathOf("torch_dtype"),
                   fmt::format("'{}' is not float16, bfloat16, float32 or auto", c->torch_dtype));
  }
  if (c->torch_dtype == "auto") c->torch_dtype.clear();
  if (!c->torch_dtype.empty()) {
    ASSIGN_OR_RETURN(c->quantization.torch_dtype,
                     quant::ParseTorchDtype(c->torch_dtype, m.PathOf("torch_dtype")));
  }
  YAML::Node dm = m.Node("device_map");
  if (dm && dm.IsMap()) {
    c->device_map = "custom";
    for (const auto& entry : dm) {
      std::string prefix = entry.first.Scalar();
      int64_t gpu;
      // Range-checked before the uint32 cast: 4294967296 must not become GPU 0.
      if (!entry.second.IsScalar() || !YAML::convert<int64_t>::decode(entry.second, gpu) ||
          gpu < 0 || gpu > UINT32_MAX) {
        return Invalid(m.PathOf("device_map") + "." + prefix, "expected a GPU index");
      }
      c->layer_map[prefix] = static_cast<uint32_t>(gpu);
    }
  } else if (dm && !dm.IsNull()) {
    RETURN_IF_ERROR(m.GetString("device_map", &c->device_map));
    if (c->device_map != "auto" && c->device_map != "tensor_parallel") {
      return Invalid(m.PathOf("device_map"),
                     fmt::format("'{}' is not auto, tensor_parallel or a {{layer-prefix: gpu}} map",
                                 c->device_map));
    }
  }
  YAML::Node mm = m.Node("max_memory");
  if (mm && !mm.IsNull()) {
    if (!mm.IsMap()) return Invalid(m.PathOf("max_memory"), "expected a {gpu: size} mapping");
    for (const auto& entry : mm) {
      std::string key = entry.first.Scalar();
      std::string path = m.PathOf("max_memory") + "." + key;
      int64_t gpu;
      if (!YAML::convert<int64_t>::decode(entry.first, gpu) || gpu < 0 || gpu > UINT32_MAX) {
        return Invalid(path, "key is not a GPU index");
      }
      if (!entry.second.IsScalar()) return Invalid(path, "expected a size like 20GiB");
      ASSIGN_OR_RETURN(c->max_memory[static_cast<uint32_t>(gpu)],
                       ParseByteSize(entry.second.Scalar(), path));
    }
  }
  YAML::Node qc = m.Node("quantization_config");
  if (qc && !qc.IsNull()) {
    *has_quant_config = true;
    DType torch_dtype = c->quantization.torch_dtype;
    ASSIGN_OR_RETURN(c->quantization, quant::ParseQuantizationConfig(
                                          YamlToJson(qc), m.PathOf("quantization_config")));
    c->quantization.torch_dtype = torch_dtype;
  }
  return m.Finish();
}

absl::Status ParseAutoScaling(const YAML::Node& node, AutoScalingConfig* a) {
  ASSIGN_OR_RETURN(YamlMap m, YamlMap::Open(node, "auto_scaling_config"));
  RETURN_IF_ERROR(m.GetString("metric", &a->metric));
  RETURN_IF_ERROR(m.GetDouble("target", &a->target));
  RETURN_IF_ERROR(m.GetUint("min_instances", &a->min_instances));
  RETURN_IF_ERROR(m.GetUint("max_instances", &a->max_instances));
  RETURN_IF_ERROR(m.GetDouble("keep_alive", &a->keep_alive));
  RETURN_IF_ERROR(m.Finish());
  if (a->metric != "concurrency") {
    return Invalid(m.PathOf("metric"), fmt::format("'{}' is not supported (concurrency)", a->metric));
  }
  if (!(a->target > 0)) {
    return Invalid(m.PathOf("target"), fmt::format("{} must be greater than 0", a->target));
  }
  if (a->max_instances == 0) return Invalid(m.PathOf("max_instances"), "must be at least 1");
  if (a->min_instances > a->max_instances) {
    return Invalid(m.PathOf("min_instances"),
                   fmt::format("{} is greater than max_instances {}", a->min_instances,
                               a->max_instances));
  }
  if (!(a->keep_alive >= 0)) {
    return Invalid(m.PathOf("keep_alive"), fmt::format("{} must be >= 0", a->keep_alive));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ConfigDigest(std::string_view normalized_yaml) {
  return fmt::format("{:016x}", XXH3_64bits(normalized_yaml.data(), normalized_yaml.size()));
}

absl::StatusOr<uint64_t> ParseByteSize(std::string_view text, std::string_view key) {
  // By hand, not std::regex: libstdc++'s regex recurses once per character, so a long
  // size string in a Deploy request overflowed the controller's stack (found by
  // deployment_config_fuzzer). Grammar: spaces, digits[.digits], spaces,
  // [K|M|G|T][i][B] or B (any case), spaces.
  const std::string s(text);
  auto invalid = [&] {
    return absl::InvalidArgumentError(
        fmt::format("{}: '{}' is not a size like 20GiB or 512MB", key, s));
  };
  auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  size_t i = 0;
  while (i < s.size() && is_space(s[i])) ++i;
  const size_t number_start = i;
  while (i < s.size() && is_digit(s[i])) ++i;
  if (i == number_start) return invalid();
  if (i < s.size() && s[i] == '.') {
    const size_t fraction_start = ++i;
    while (i < s.size() && is_digit(s[i])) ++i;
    if (i == fraction_start) return invalid();
  }
  const size_t number_end = i;
  while (i < s.size() && is_space(s[i])) ++i;
  std::string unit;
  while (i < s.size() && !is_space(s[i])) {
    unit += static_cast<char>(std::toupper(static_cast<unsigned char>(s[i++])));
  }
  while (i < s.size() && is_space(s[i])) ++i;
  if (i != s.size()) return invalid();
  double scale = 1;
  if (!unit.empty() && unit != "B") {
    const size_t power = std::string_view("KMGT").find(unit[0]);
    std::string_view rest = std::string_view(unit).substr(1);
    const bool binary = !rest.empty() && rest[0] == 'I';
    if (binary) rest.remove_prefix(1);
    if (power == std::string_view::npos || !(rest.empty() || rest == "B")) return invalid();
    scale = std::pow(binary ? 1024.0 : 1000.0, static_cast<double>(power + 1));
  }
  // from_chars, not stod: stod throws on a number past DBL_MAX (a few hundred digits).
  double value = 0;
  const auto parsed = std::from_chars(s.data() + number_start, s.data() + number_end, value);
  // Past 2^64 the cast would be undefined; no memory or bandwidth is that large.
  if (parsed.ec != std::errc() || !(value * scale < 18446744073709551616.0)) {
    return absl::InvalidArgumentError(
        fmt::format("{}: '{}' is too large (at most 2^64 - 1 bytes)", key, s));
  }
  return static_cast<uint64_t>(value * scale);
}

absl::StatusOr<DeploymentConfig> ParseDeploymentConfig(std::string_view yaml) {
  ASSIGN_OR_RETURN(YAML::Node root, LoadYaml(std::string(yaml)));
  ASSIGN_OR_RETURN(YamlMap m, YamlMap::Open(root, ""));
  DeploymentConfig c;
  RETURN_IF_ERROR(m.GetString("model", &c.model));
  if (c.model.empty()) return Invalid("model", "is required");
  if (absl::Status s = store::ValidateModelName(c.model); !s.ok()) {
    return Invalid("model", fmt::format("'{}' is not a valid store name ({})", c.model,
                                        std::string(s.message())));
  }
  RETURN_IF_ERROR(m.GetString("name", &c.name));
  if (c.name.empty()) c.name = c.model;
  // Deployment names follow the store's naming rule, so they are safe in paths and URLs.
  if (absl::Status s = store::ValidateModelName(c.name); !s.ok()) {
    return Invalid("name", fmt::format("'{}' is not a valid deployment name ({})", c.name,
                                       std::string(s.message())));
  }
  RETURN_IF_ERROR(m.GetUint("num_gpus", &c.num_gpus));
  if (c.num_gpus == 0) return Invalid("num_gpus", "0 must be at least 1");
  bool has_quant_config = false;
  RETURN_IF_ERROR(ParseBackendConfig(m.Node("backend_config"), &c, &has_quant_config));
  std::string shorthand;
  RETURN_IF_ERROR(m.GetString("quantization", &shorthand));
  if (!shorthand.empty()) {
    if (has_quant_config) {
      return Invalid("quantization",
                     "given together with backend_config.quantization_config; use one");
    }
    DType torch_dtype = c.quantization.torch_dtype;
    ASSIGN_OR_RETURN(c.quantization, quant::ParseQuantizationShorthand(shorthand, "quantization"));
    c.quantization.torch_dtype = torch_dtype;
  }
  c.quantization.unspecified = shorthand.empty() && !has_quant_config;
  RETURN_IF_ERROR(ParseAutoScaling(m.Node("auto_scaling_config"), &c.auto_scaling));
  {
    ASSIGN_OR_RETURN(YamlMap p, YamlMap::Open(m.Node("placement_config"), "placement_config"));
    RETURN_IF_ERROR(p.GetStringList("local_disk", &c.placement.local_disk));
    RETURN_IF_ERROR(p.GetStringList("memory_pool", &c.placement.memory_pool));
    RETURN_IF_ERROR(p.GetString("spread", &c.placement.spread));
    if (c.placement.spread.empty()) c.placement.spread = "preferred";
    if (c.placement.spread != "preferred" && c.placement.spread != "required") {
      return Invalid("placement_config.spread",
                     fmt::format("'{}' is not preferred or required", c.placement.spread));
    }
    RETURN_IF_ERROR(p.Finish());
  }
  RETURN_IF_ERROR(m.Finish());
  for (const auto& [gpu, bytes] : c.max_memory) {
    if (gpu >= c.num_gpus) {
      return Invalid(fmt::format("backend_config.max_memory.{}", gpu),
                     fmt::format("GPU {} is beyond num_gpus {}", gpu, c.num_gpus));
    }
  }
  for (const auto& [prefix, gpu] : c.layer_map) {
    if (gpu >= c.num_gpus) {
      return Invalid(fmt::format("backend_config.device_map.{}", prefix),
                     fmt::format("GPU {} is beyond num_gpus {}", gpu, c.num_gpus));
    }
  }
  return c;
}

bool SameDeploymentConfig(const DeploymentConfig& a, const DeploymentConfig& b) {
  return DeploymentConfigToYaml(a) == DeploymentConfigToYaml(b);
}

std::string DeploymentConfigToYaml(const DeploymentConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.name;
  out << YAML::Key << "model" << YAML::Value << c.model;
  out << YAML::Key << "num_gpus" << YAML::Value << c.num_gpus;
  out << YAML::Key << "backend_config" << YAML::Value << YAML::BeginMap;
  if (!c.torch_dtype.empty()) out << YAML::Key << "torch_dtype" << YAML::Value << c.torch_dtype;
  out << YAML::Key << "device_map" << YAML::Value;
  if (c.device_map == "custom") {
    out << YAML::BeginMap;
    for (const auto& [prefix, gpu] : c.layer_map) out << YAML::Key << prefix << YAML::Value << gpu;
    out << YAML::EndMap;
  } else {
    out << c.device_map;
  }
  if (!c.max_memory.empty()) {
    out << YAML::Key << "max_memory" << YAML::Value << YAML::BeginMap;
    for (const auto& [gpu, bytes] : c.max_memory) out << YAML::Key << gpu << YAML::Value << bytes;
    out << YAML::EndMap;
  }
  // Left out when the deployment named none, so that it round-trips as unspecified.
  if (!c.quantization.keep_prequantized && !c.quantization.unspecified) {
    out << YAML::Key << "quantization_config" << YAML::Value;
    JsonToYaml(c.quantization.ToHfJson(), out);
  }
  out << YAML::EndMap;
  // `keep` has no BitsAndBytesConfig spelling: it round-trips as the shorthand.
  if (c.quantization.keep_prequantized) out << YAML::Key << "quantization" << YAML::Value << "keep";
  const AutoScalingConfig& a = c.auto_scaling;
  out << YAML::Key << "auto_scaling_config" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "metric" << YAML::Value << a.metric;
  out << YAML::Key << "target" << YAML::Value << a.target;
  out << YAML::Key << "min_instances" << YAML::Value << a.min_instances;
  out << YAML::Key << "max_instances" << YAML::Value << a.max_instances;
  out << YAML::Key << "keep_alive" << YAML::Value << a.keep_alive;
  out << YAML::EndMap;
  out << YAML::Key << "placement_config" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "local_disk" << YAML::Value << c.placement.local_disk;
  out << YAML::Key << "memory_pool" << YAML::Value << c.placement.memory_pool;
  out << YAML::Key << "spread" << YAML::Value << c.placement.spread;
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace loadstar::daemon
