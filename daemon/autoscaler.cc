#include "daemon/autoscaler.h"

#include <algorithm>
#include <cmath>

namespace loadstar::daemon {

uint32_t DesiredInstances(const AutoScalingConfig& c, uint32_t demand) {
  double want = std::ceil(static_cast<double>(demand) / c.target);
  return static_cast<uint32_t>(
      std::clamp<double>(want, c.min_instances, c.max_instances));
}

ScalingDecision DecideScaling(const AutoScalingConfig& c, const std::vector<InstanceLoad>& instances,
                              uint32_t waiting_acquires, int64_t now_ms) {
  uint32_t leases = 0;
  for (const InstanceLoad& i : instances) leases += i.leases;
  ScalingDecision d;
  d.desired = DesiredInstances(c, leases + waiting_acquires);
  uint32_t current = static_cast<uint32_t>(instances.size());
  if (d.desired > current) {
    d.start = d.desired - current;
    return d;
  }
  if (d.desired == current) return d;
  // Stop the instance idle the longest, once it has been idle keep_alive seconds.
  const InstanceLoad* victim = nullptr;
  for (const InstanceLoad& i : instances) {
    if (!i.ready || i.leases > 0) continue;
    if (now_ms - i.idle_since_ms < static_cast<int64_t>(c.keep_alive * 1000)) continue;
    if (victim == nullptr || i.idle_since_ms < victim->idle_since_ms) victim = &i;
  }
  if (victim != nullptr) d.stop = victim->instance_id;
  return d;
}

}  // namespace loadstar::daemon
