// Autoscaler: how many instances a deployment should have, and which idle one to stop.
// A pure function of the deployment's instances and demand (SPEC §7):
//   desired = clamp(ceil((in-flight leases + waiting acquires) / target), min, max);
// above desired, one instance idle (no leases) for keep_alive seconds is stopped per call;
// min_instances 0 scales to zero.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/deployment_config.h"

namespace loadstar::daemon {

struct InstanceLoad {
  std::string instance_id;
  bool ready = false;  // loading instances count toward capacity but are never stopped
  uint32_t leases = 0;
  int64_t idle_since_ms = 0;  // when its last lease ended (or it became ready)
};

struct ScalingDecision {
  uint32_t desired = 0;
  uint32_t start = 0;       // new instances to place
  std::string stop;         // instance to scale down; empty: none
};

uint32_t DesiredInstances(const AutoScalingConfig& config, uint32_t demand);

ScalingDecision DecideScaling(const AutoScalingConfig& config,
                              const std::vector<InstanceLoad>& instances,
                              uint32_t waiting_acquires, int64_t now_ms);

}  // namespace loadstar::daemon
