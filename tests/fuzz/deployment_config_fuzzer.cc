// Fuzzes the deployment config parser (daemon/deployment_config.h), which reads YAML from
// any client of Deploy and from files. Invariants: bad input is INVALID_ARGUMENT, never a
// crash or another code; a config that parses normalizes (DeploymentConfigToYaml) to text
// that parses again and normalizes to the same text, as the header promises (the
// controller persists the normalized YAML and compares digests of it).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/deployment_config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loadstar::daemon;
  std::string_view yaml(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<DeploymentConfig> config = ParseDeploymentConfig(yaml);
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument, "{}",
               config.status().ToString());
    return 0;
  }
  const std::string normalized = DeploymentConfigToYaml(*config);
  absl::StatusOr<DeploymentConfig> again = ParseDeploymentConfig(normalized);
  FUZZ_CHECK(again.ok(), "normalized YAML does not parse: {}\n{}", again.status().ToString(),
             normalized);
  FUZZ_CHECK(DeploymentConfigToYaml(*again) == normalized, "not stable:\n{}\n--\n{}", normalized,
             DeploymentConfigToYaml(*again));
  FUZZ_CHECK(again->name == config->name && again->model == config->model, "{}", normalized);
  FUZZ_CHECK(ConfigDigest(normalized).size() == 16, "digest");
  return 0;
}
