// Placement: which worker (and which of its devices) should host a new instance. A policy
// is a pure function of a ClusterSnapshot, so it is tested over hand-built snapshots and
// benchmarked over simulated clusters without any server.
//
// LoadTimePolicy (SPEC §7) estimates time-to-ready per candidate worker:
//   queue wait + bytes / bandwidth of the fastest tier holding the model
//   (resident replica -> device copy; host cache -> copy; local disk -> disk)
//   + quantization time (unless a quantized artifact is stored),
// and picks the minimum among workers whose devices fit. Replicas of one deployment spread
// over workers: a worker holding fewer of them always wins over one holding more (so one
// worker's loss never takes every replica down), and the estimate decides among equals;
// with `spread: required` a worker that already holds one is not a candidate at all. The
// result tells "placed" from "retry later" (fits an idle cluster, not the current one)
// from "infeasible" (never fits).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"

namespace loadstar::daemon {

struct DeviceSnapshot {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;  // after instances placed or loading there
};

struct WorkerSnapshot {
  std::string worker_id;
  std::vector<DeviceSnapshot> devices;
  double disk_bandwidth = 1e9;         // bytes/s
  double copy_bandwidth = 5e9;         // host memory -> device, bytes/s
  // device -> device (resident replica), the worker's communicator as it measured it at
  // start (WorkerInfo.device_copy_bandwidth); 0: no communicator, no such tier.
  double device_copy_bandwidth = 2e10;
  double quantize_bandwidth = 2e9;     // input bytes/s
  double queue_wait_seconds = 0;       // loads already running there
  absl::flat_hash_set<std::string> models_on_disk;     // store names
  absl::flat_hash_set<std::string> variants_on_disk;   // "model@variant" (quantized artifacts)
  absl::flat_hash_set<std::string> models_in_host_cache;
  absl::flat_hash_set<std::string> resident;           // deployment names with a ready instance
  // Instances per deployment on this worker, placed, loading or ready.
  absl::flat_hash_map<std::string, uint32_t> replicas;
};

struct ClusterSnapshot {
  std::vector<WorkerSnapshot> workers;  // alive workers only
};

struct PlacementRequest {
  std::string deployment;
  std::string model;
  std::string variant;        // quantized artifact key ("nf4-bs64"); empty: none
  uint64_t checkpoint_bytes = 0;  // bytes read from the store without a variant
  uint64_t loaded_bytes = 0;      // bytes on devices after quantization, all devices
  // Bytes each device must have free: the largest device of the worker's plan; 0: an
  // even split of loaded_bytes (estimated).
  uint64_t device_bytes = 0;
  uint32_t num_gpus = 1;
  std::vector<std::string> allowed_workers;  // placement_config.memory_pool; empty: any
  // placement_config.local_disk: workers whose store may be read for the model; others
  // can still host it from their host cache or a resident replica. Empty: any.
  std::vector<std::string> local_disk;
  bool spread_required = false;  // placement_config.spread: required
};

struct Placement {
  enum class Kind { kPlaced, kRetryLater, kInfeasible };
  Kind kind = Kind::kInfeasible;
  std::string worker_id;
  std::vector<uint32_t> devices;  // indices into the worker's devices
  double estimated_seconds = 0;
  // Why not placed, as a Status with the canonical code a caller should return:
  // RESOURCE_EXHAUSTED (bigger than any worker), FAILED_PRECONDITION (no worker may host
  // it), UNAVAILABLE (no worker), or the retry-later reason.
  absl::Status reason;
};

class PlacementPolicy {
 public:
  virtual ~PlacementPolicy() = default;
  virtual Placement Place(const ClusterSnapshot& cluster, const PlacementRequest& request) const = 0;
};

class LoadTimePolicy : public PlacementPolicy {
 public:
  Placement Place(const ClusterSnapshot& cluster, const PlacementRequest& request) const override;
  // The estimate for one worker; negative when the model is on no tier of that worker.
  static double EstimateSeconds(const WorkerSnapshot& worker, const PlacementRequest& request);
};

// What placement reserves on each of the request's devices.
uint64_t PerDeviceBytes(const PlacementRequest& request);

// Estimated bytes on devices for a checkpoint of `bytes` (fp16/bf16) quantized with
// `method` at `blocksize` (absmax fp32 per block; int8 adds one fp32 per row, ignored).
uint64_t EstimateLoadedBytes(uint64_t bytes, const std::string& method, uint32_t blocksize);

}  // namespace loadstar::daemon
