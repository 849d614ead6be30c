#include "daemon/worker_metrics.h"

namespace loadstar::daemon {
namespace {

// Loads run from tens of milliseconds (a small model from the host cache) to minutes.
const prometheus::Histogram::BucketBoundaries kLoadBuckets = {
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600};

// The quantization label: the deployment's method (none | int8 | fp4 | nf4 | keep).
std::string QuantizationLabel(const loadstar::v1::LoadSpec& spec) {
  const std::string& method = spec.quantization().method();
  return method.empty() ? "none" : method;
}

}  // namespace

WorkerMetrics::WorkerMetrics(MetricsServer* server, WorkerManager* manager)
    : server_(server), manager_(manager) {
  prometheus::Registry& r = server->registry();
  load_seconds_ = &prometheus::BuildHistogram()
                       .Name("loadstar_load_seconds")
                       .Help("Instance load duration, by source tier and quantization")
                       .Register(r);
  load_bytes_ = &prometheus::BuildCounter()
                     .Name("loadstar_load_bytes_total")
                     .Help("Bytes placed on devices by loads, by source tier (disk | host_cache | device_copy) and quantization")
                     .Register(r);
  loads_ = &prometheus::BuildCounter()
                .Name("loadstar_loads_total")
                .Help("Instance loads finished, by result (ok | error | cancelled)")
                .Register(r);
  host_cache_ = &prometheus::BuildGauge()
                     .Name("loadstar_host_cache_bytes")
                     .Help("Host (DRAM) cache of checkpoints: capacity and used")
                     .Register(r);
  device_memory_ = &prometheus::BuildGauge()
                        .Name("loadstar_device_memory_bytes")
                        .Help("Device memory per device: total and used")
                        .Register(r);
  instances_ = &prometheus::BuildGauge()
                    .Name("loadstar_worker_instances")
                    .Help("Instances held by the worker, by state")
                    .Register(r);
  refresh_id_ = server->AddRefresh([this] { Refresh(); });
}

WorkerMetrics::~WorkerMetrics() { server_->RemoveRefresh(refresh_id_); }

void WorkerMetrics::RecordLoad(const loadstar::v1::LoadInstanceRequest& request,
                               const absl::StatusOr<loadstar::v1::InstanceReport>& report) {
  std::string worker = manager_->worker_id();
  if (!report.ok()) {
    std::string result = absl::IsCancelled(report.status()) ? "cancelled" : "error";
    loads_->Add({{"worker", worker}, {"result", result}}).Increment();
    return;
  }
  prometheus::Labels labels = {{"worker", worker},
                               {"tier", report->tier()},
                               {"quantization", QuantizationLabel(request.spec())}};
  loads_->Add({{"worker", worker}, {"result", "ok"}}).Increment();
  load_seconds_->Add(labels, kLoadBuckets).Observe(report->load_seconds());
  load_bytes_->Add(labels).Increment(static_cast<double>(report->bytes()));
}

void WorkerMetrics::Refresh() {
  std::string worker = manager_->worker_id();
  InstanceLoader* loader = manager_->loader();
  host_cache_->Add({{"worker", worker}, {"kind", "capacity"}})
      .Set(static_cast<double>(loader->host_cache_bytes()));
  host_cache_->Add({{"worker", worker}, {"kind", "used"}})
      .Set(static_cast<double>(loader->host_cache_used()));
  for (const loadstar::v1::DeviceInfo& d : loader->Devices()) {
    device_memory_->Add({{"worker", worker}, {"device", d.name()}, {"kind", "total"}})
        .Set(static_cast<double>(d.total_bytes()));
    device_memory_->Add({{"worker", worker}, {"device", d.name()}, {"kind", "used"}})
        .Set(static_cast<double>(d.total_bytes() - d.free_bytes()));
  }
  std::map<std::string, double> states = {{"loading", 0}, {"ready", 0}};
  for (const loadstar::v1::InstanceReport& i : manager_->Instances()) ++states[i.state()];
  for (const auto& [state, n] : states) {
    instances_->Add({{"worker", worker}, {"state", state}}).Set(n);
  }
}

}  // namespace loadstar::daemon
