// DeploymentConfig: the deployment YAML of SPEC §3.2 (field names follow ServerlessLLM and
// HF BitsAndBytesConfig), parsed and validated. Every error names the key path
// ("backend_config.quantization_config.bnb_4bit_blocksize: 48 is not a power of two in
// 32..4096"); unknown keys are rejected so a typo never silently becomes a default.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/policy.h"

namespace loadstar::daemon {

struct AutoScalingConfig {
  std::string metric = "concurrency";
  double target = 1;  // in-flight leases per instance
  uint32_t min_instances = 0;
  uint32_t max_instances = 1;
  double keep_alive = 60;  // seconds idle before one instance is scaled down

  bool operator==(const AutoScalingConfig&) const = default;
};

struct PlacementConfig {
  // Workers whose local store may be read for the model; a worker not listed can still
  // host an instance from its host cache. Empty: any.
  std::vector<std::string> local_disk;
  std::vector<std::string> memory_pool;  // workers allowed to host instances; empty: any
  // Replicas over workers: "preferred" (a worker with fewer replicas of this deployment
  // wins) or "required" (never two on one worker).
  std::string spread = "preferred";

  bool operator==(const PlacementConfig&) const = default;
};

struct DeploymentConfig {
  std::string name;   // the deployment's name; default: the model's (one model may be
                      // deployed under several names with different configs)
  std::string model;  // store name
  uint32_t num_gpus = 1;
  std::string torch_dtype;           // empty: keep the checkpoint's dtypes
  std::string device_map = "auto";   // auto | tensor_parallel | "custom" (see layer_map)
  std::map<std::string, uint32_t> layer_map;  // device_map given as {layer-prefix: gpu}
  std::map<uint32_t, uint64_t> max_memory;    // gpu index -> bytes
  // Parsed by quant/'s ParseQuantizationConfig / ParseQuantizationShorthand (one parser
  // for the whole project); torch_dtype above is copied into it when given.
  quant::QuantConfig quantization;
  AutoScalingConfig auto_scaling;
  PlacementConfig placement;
};

// Same config: equal normalized YAML.
bool SameDeploymentConfig(const DeploymentConfig& a, const DeploymentConfig& b);

// Parses and validates `yaml`. INVALID_ARGUMENT with the key path on any error.
absl::StatusOr<DeploymentConfig> ParseDeploymentConfig(std::string_view yaml);

// Normalized YAML; parsing it gives the same config.
std::string DeploymentConfigToYaml(const DeploymentConfig& config);

// A short digest of a normalized config (DeploymentConfigToYaml): what an instance records
// of the config it was loaded with, so an update can tell old instances from new.
std::string ConfigDigest(std::string_view normalized_yaml);

// "20GiB", "512MB", "1024" -> bytes. `key` names the field in the error.
absl::StatusOr<uint64_t> ParseByteSize(std::string_view text, std::string_view key);

}  // namespace loadstar::daemon
