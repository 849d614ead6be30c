// Spread: how a load over several devices moves its bytes (SPEC §5 Communicator).
//
//  - kPerDevice: every device gets its bytes by its own host -> device copies (parallel
//    links; a replicated tensor crosses the host link once per device).
//  - kStaged: every untransformed byte enters through the root (the load's first
//    device): a chunk is copied host -> device once, into the root's own output when the
//    root holds the whole chunk (a replicated tensor) or else into a staging buffer on the
//    root, and the Communicator moves it on: Broadcast for replicated bytes, Scatter when
//    every rank gets an equal contiguous slice (a small split tensor in one chunk, whole
//    rows of column shards rearranged on the host), Copy otherwise — and always Copy when
//    the load uses a subset of the communicator's ranks, since collectives span every
//    rank. Transformed (quantized) outputs are written by their transform per device on
//    either path.
// Both paths give identical bytes (tests/loader/spread_test.cc).
//
// ChooseSpreadPath picks the one with the smaller estimated time from measured
// bandwidths (the worker measures them at start; daemon/pipeline_instance_loader.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loader/communicator.h"
#include "loader/load_plan.h"
#include "store/manifest.h"

namespace loadstar::loader {

enum class SpreadPath { kPerDevice, kStaged };

// "per_device" | "staged".
std::string SpreadPathName(SpreadPath path);

// Bandwidths in bytes/s, as measured on the worker.
struct SpreadBandwidths {
  double host_to_device = 5e9;            // one host -> device stream
  double host_to_devices_parallel = 5e9;  // every device of the load at once, in total
  double device_to_device = 2e10;         // Communicator Copy between two devices
};

// The bytes each path moves for `plan`.
struct SpreadTraffic {
  uint64_t per_device_h2d = 0;  // kPerDevice: host -> device bytes over all devices
  uint64_t staged_h2d = 0;      // kStaged: host -> device bytes (root, and single-device)
  uint64_t staged_d2d = 0;      // kStaged: device -> device bytes out of the root
};
SpreadTraffic MeasureTraffic(const store::Manifest& manifest, const LoadPlan& plan);

// Estimated seconds of each path (transfer only: both read the same bytes from the store).
double EstimatePerDeviceSeconds(const SpreadTraffic& t, const SpreadBandwidths& bw);
double EstimateStagedSeconds(const SpreadTraffic& t, const SpreadBandwidths& bw);

// kPerDevice for a single-device plan; else the faster estimate (kPerDevice on a tie).
SpreadPath ChooseSpreadPath(const store::Manifest& manifest, const LoadPlan& plan,
                            const SpreadBandwidths& bw);

// What a multi-device load needs to take the staged path: the communicator over the
// worker's devices and the rank of each of the load's devices (ranks[d] for device d).
struct SpreadOptions {
  SpreadPath path = SpreadPath::kPerDevice;
  Communicator* communicator = nullptr;  // required for kStaged
  std::vector<int> ranks;                // one per device of the load
};

}  // namespace loadstar::loader
