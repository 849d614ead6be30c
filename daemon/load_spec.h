// Both sides of LoadSpec: the spec the controller sends for a deployment config, and
// the quant::QuantConfig and loader::PlanOptions the worker makes of it.
#pragma once

#include "absl/status/statusor.h"
#include "daemon/deployment_config.h"
#include "loader/load_plan.h"
#include "loadstar/v1/worker.pb.h"
#include "quant/policy.h"

namespace loadstar::daemon {

// The LoadSpec of a deployment's parsed config: what its LoadInstance (and its worker's
// PlanLoad) is asked for.
loadstar::v1::LoadSpec ToLoadSpec(const DeploymentConfig& config);

// Quantization and torch_dtype of `spec` (the controller filled them from the
// deployment's parsed config) as quant/ and loader/ take them. InvalidArgument for a
// method or dtype name quant/ does not know.
absl::StatusOr<quant::QuantConfig> QuantConfigFromLoadSpec(const loadstar::v1::LoadSpec& spec);

// Placement of `spec` over `num_devices` devices as loader/ plans it: device_map (single
// on one device unless a layer map names devices), the layer map and the max_memory caps
// (unlisted GPUs uncapped). INVALID_ARGUMENT with the key path for a map or cap naming a
// GPU beyond num_devices or an unknown device_map.
absl::StatusOr<loader::PlanOptions> PlanOptionsFromLoadSpec(const loadstar::v1::LoadSpec& spec,
                                                            uint32_t num_devices);

}  // namespace loadstar::daemon
