// The controller's Prometheus metrics (SPEC §7 Operations). Events are counted where they
// happen (ControllerService records each Acquire; the state store's write failures are
// counted by the controller server); gauges (instances by state, leases, deployments,
// workers) are read from the controller at each scrape, so they never drift from what
// `status` shows.
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <map>
#include <string>

#include "daemon/controller_slot.h"
#include "daemon/metrics_server.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace loadstar::daemon {

class ControllerMetrics {
 public:
  // Registers the families on `server`; `server` and `slot` outlive this object. Gauges
  // read the slot's controller (all zero while this process does not lead).
  ControllerMetrics(MetricsServer* server, const ControllerSlot* slot);
  ~ControllerMetrics();

  // One Acquire RPC answered after `seconds`; `cold_start` when it waited for a load.
  void RecordAcquire(double seconds, bool ok, bool cold_start);
  void RecordStateWriteFailure();

 private:
  void Refresh();

  MetricsServer* const server_;
  const ControllerSlot* const slot_;
  prometheus::Histogram* acquire_ok_;
  prometheus::Histogram* acquire_error_;
  prometheus::Counter* cold_starts_;
  prometheus::Counter* state_write_failures_;
  std::map<std::string, prometheus::Gauge*> instances_;  // by state
  std::map<std::string, prometheus::Gauge*> workers_;    // alive | lost
  prometheus::Gauge* leases_;
  prometheus::Gauge* deployments_;
  int refresh_id_;
};

}  // namespace loadstar::daemon
