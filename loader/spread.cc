#include "loader/spread.h"

#include <algorithm>

namespace loadstar::loader {

std::string SpreadPathName(SpreadPath path) {
  return path == SpreadPath::kStaged ? "staged" : "per_device";
}

SpreadTraffic MeasureTraffic(const store::Manifest& manifest, const LoadPlan& plan) {
  SpreadTraffic t;
  for (const PlannedTensor& out : plan.tensors) {
    if (out.transformed) {  // written by its transform on its own device, either way
      t.per_device_h2d += out.size;
      t.staged_h2d += out.size;
      continue;
    }
    t.per_device_h2d += out.size;
    // Staged: the source bytes cross the host link once (counted with the root's output,
    // or with the first output of a tensor the root holds no part of); what lands
    // elsewhere comes out of the root.
    if (out.device != 0) t.staged_d2d += out.size;
  }
  // Host -> root: each untransformed source tensor once.
  std::vector<bool> counted(manifest.tensors.size(), false);
  for (const PlannedTensor& out : plan.tensors) {
    if (out.transformed || counted[out.source]) continue;
    counted[out.source] = true;
    t.staged_h2d += manifest.tensors[out.source].size;
  }
  return t;
}

double EstimatePerDeviceSeconds(const SpreadTraffic& t, const SpreadBandwidths& bw) {
  return static_cast<double>(t.per_device_h2d) / std::max(bw.host_to_devices_parallel, 1.0);
}

double EstimateStagedSeconds(const SpreadTraffic& t, const SpreadBandwidths& bw) {
  return static_cast<double>(t.staged_h2d) / std::max(bw.host_to_device, 1.0) +
         static_cast<double>(t.staged_d2d) / std::max(bw.device_to_device, 1.0);
}

SpreadPath ChooseSpreadPath(const store::Manifest& manifest, const LoadPlan& plan,
                            const SpreadBandwidths& bw) {
  if (plan.num_devices <= 1) return SpreadPath::kPerDevice;
  SpreadTraffic t = MeasureTraffic(manifest, plan);
  return EstimateStagedSeconds(t, bw) < EstimatePerDeviceSeconds(t, bw) ? SpreadPath::kStaged
                                                                        : SpreadPath::kPerDevice;
}

}  // namespace loadstar::loader
