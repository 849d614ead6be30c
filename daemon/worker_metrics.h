// A worker's Prometheus metrics (SPEC §7 Operations), every series labelled with the
// worker id (`loadstar up` puts several workers on one endpoint). Loads are recorded by
// WorkerService as they finish; host cache and device memory gauges are read from the
// worker at each scrape.
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <map>
#include <string>

#include "daemon/metrics_server.h"
#include "daemon/worker_manager.h"
#include "loadstar/v1/worker.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace loadstar::daemon {

class WorkerMetrics {
 public:
  // `server` and `manager` outlive this object; the worker id is read at each event.
  WorkerMetrics(MetricsServer* server, WorkerManager* manager);
  ~WorkerMetrics();

  // A finished load: its report (seconds, bytes, tier, quantization) on success.
  void RecordLoad(const loadstar::v1::LoadInstanceRequest& request,
                  const absl::StatusOr<loadstar::v1::InstanceReport>& report);

 private:
  void Refresh();

  MetricsServer* const server_;
  WorkerManager* const manager_;
  prometheus::Family<prometheus::Histogram>* load_seconds_;
  prometheus::Family<prometheus::Counter>* load_bytes_;
  prometheus::Family<prometheus::Counter>* loads_;
  prometheus::Family<prometheus::Gauge>* host_cache_;
  prometheus::Family<prometheus::Gauge>* device_memory_;
  prometheus::Family<prometheus::Gauge>* instances_;
  int refresh_id_;
};

}  // namespace loadstar::daemon
