#include "daemon/scheduler_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

namespace loadstar::daemon {
namespace {

// Picks `n` devices with at least `need` bytes, preferring the emptiest (spreads load);
// free memory from `free` or total from `total`. Returns false when fewer than n fit.
bool PickDevices(const std::vector<DeviceSnapshot>& devices, uint32_t n, uint64_t need,
                 bool use_total, std::vector<uint32_t>* picked) {
  std::vector<uint32_t> order;
  for (uint32_t i = 0; i < devices.size(); ++i) {
    uint64_t avail = use_total ? devices[i].total_bytes : devices[i].free_bytes;
    if (avail >= need) order.push_back(i);
  }
  if (order.size() < n) return false;
  if (picked != nullptr) {
    std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](uint32_t a, uint32_t b) {
      return devices[a].free_bytes > devices[b].free_bytes ||
             (devices[a].free_bytes == devices[b].free_bytes && a < b);
    });
    picked->assign(order.begin(), order.begin() + n);
  }
  return true;
}

}  // namespace

uint64_t PerDeviceBytes(const PlacementRequest& r) {
  if (r.device_bytes > 0) return r.device_bytes;
  const uint64_t n = std::max<uint32_t>(r.num_gpus, 1);
  return (r.loaded_bytes + n - 1) / n;
}

uint64_t EstimateLoadedBytes(uint64_t bytes, const std::string& method, uint32_t blocksize) {
  // Checkpoint elements are taken as 2 bytes (fp16/bf16), the common case.
  uint64_t elements = bytes / 2;
  if (method == "nf4" || method == "fp4") {
    return elements / 2 + elements / std::max<uint32_t>(blocksize, 1) * 4;
  }
  if (method == "int8") return elements;
  return bytes;
}

double LoadTimePolicy::EstimateSeconds(const WorkerSnapshot& w, const PlacementRequest& r) {
  double seconds = -1;
  auto consider = [&](double s) {
    if (seconds < 0 || s < seconds) seconds = s;
  };
  double loaded = static_cast<double>(r.loaded_bytes);
  // A resident replica on this worker: copied device-to-device by its communicator, at
  // the bandwidth the worker measured (0: it has none, no such tier).
  if (w.device_copy_bandwidth > 0 && w.resident.contains(r.deployment)) {
    consider(loaded / w.device_copy_bandwidth);
  }
  bool has_variant = !r.variant.empty() && w.variants_on_disk.contains(r.model + "@" + r.variant);
  double quantize = r.variant.empty() || has_variant
                        ? 0
                        : static_cast<double>(r.checkpoint_bytes) / w.quantize_bandwidth;
  if (w.models_in_host_cache.contains(r.model)) {
    consider(static_cast<double>(r.checkpoint_bytes) / w.copy_bandwidth + quantize);
  }
  bool disk_allowed = r.local_disk.empty() || std::find(r.local_disk.begin(), r.local_disk.end(),
                                                        w.worker_id) != r.local_disk.end();
  if (has_variant && disk_allowed) consider(loaded / std::min(w.disk_bandwidth, w.copy_bandwidth));
  if (disk_allowed && w.models_on_disk.contains(r.model)) {
    // Quantizing overlaps the read (SPEC §5), so the slower of the two bounds the load.
    double read = static_cast<double>(r.checkpoint_bytes) /
                  std::min(w.disk_bandwidth, w.copy_bandwidth);
    consider(std::max(read, quantize));
  }
  return seconds < 0 ? seconds : seconds + w.queue_wait_seconds;
}

Placement LoadTimePolicy::Place(const ClusterSnapshot& cluster, const PlacementRequest& r) const {
  Placement best;
  if (cluster.workers.empty()) {
    best.reason = absl::UnavailableError("no worker is registered");
    return best;
  }
  const uint64_t per_device = PerDeviceBytes(r);
  bool any_allowed = false, any_has_model = false, any_fits_idle = false, any_unspread = false;
  double best_seconds = std::numeric_limits<double>::infinity();
  uint32_t best_replicas = std::numeric_limits<uint32_t>::max();
  std::vector<uint32_t> devices;
  for (const WorkerSnapshot& w : cluster.workers) {
    if (!r.allowed_workers.empty() &&
        std::find(r.allowed_workers.begin(), r.allowed_workers.end(), w.worker_id) ==
            r.allowed_workers.end()) {
      continue;
    }
    any_allowed = true;
    double seconds = EstimateSeconds(w, r);
    if (seconds < 0) continue;
    any_has_model = true;
    if (!PickDevices(w.devices, r.num_gpus, per_device, /*use_total=*/true, nullptr)) continue;
    any_fits_idle = true;
    auto held = w.replicas.find(r.deployment);
    uint32_t replicas = held == w.replicas.end() ? 0 : held->second;
    if (r.spread_required && replicas > 0) continue;
    any_unspread = true;
    // Fewer replicas of this deployment first (anti-affinity), then the faster load.
    if (replicas > best_replicas || (replicas == best_replicas && seconds >= best_seconds)) continue;
    if (!PickDevices(w.devices, r.num_gpus, per_device, /*use_total=*/false, &devices)) continue;
    best_replicas = replicas;
    best_seconds = seconds;
    best.kind = Placement::Kind::kPlaced;
    best.worker_id = w.worker_id;
    best.devices = devices;
    best.estimated_seconds = seconds;
  }
  if (best.kind == Placement::Kind::kPlaced) return best;
  if (!any_allowed) {
    best.reason = absl::FailedPreconditionError(fmt::format(
        "no registered worker is in placement_config.memory_pool of '{}'", r.deployment));
  } else if (!any_has_model) {
    best.reason = absl::FailedPreconditionError(fmt::format(
        "no eligible worker holds model '{}' in its store{}", r.model,
        r.local_disk.empty() ? "" : " (placement_config.local_disk limits which stores are read)"));
  } else if (any_fits_idle && !any_unspread) {
    best.kind = Placement::Kind::kRetryLater;
    best.reason = absl::ResourceExhaustedError(fmt::format(
        "'{}' has placement_config.spread: required and every eligible worker already holds "
        "one of its replicas; add a worker or lower max_instances", r.deployment));
  } else if (!any_fits_idle) {
    best.reason = absl::ResourceExhaustedError(fmt::format(
        "'{}' needs {} devices with {} bytes each; no eligible worker has them", r.deployment,
        r.num_gpus, per_device));
  } else {
    best.kind = Placement::Kind::kRetryLater;
    best.reason = absl::ResourceExhaustedError(fmt::format(
        "'{}': devices are busy; waiting for memory ({} devices x {} bytes)", r.deployment,
        r.num_gpus, per_device));
  }
  return best;
}

}  // namespace loadstar::daemon
