#include "daemon/controller_metrics.h"

#include <vector>

namespace loadstar::daemon {
namespace {

// Acquire answers in microseconds when warm and in seconds on a cold start.
const prometheus::Histogram::BucketBoundaries kAcquireBuckets = {
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300};

}  // namespace

ControllerMetrics::ControllerMetrics(MetricsServer* server, const ControllerSlot* slot)
    : server_(server), slot_(slot) {
  prometheus::Registry& r = server->registry();
  auto& acquire = prometheus::BuildHistogram()
                      .Name("loadstar_acquire_seconds")
                      .Help("Acquire RPC latency, cold starts included")
                      .Register(r);
  acquire_ok_ = &acquire.Add({{"result", "ok"}}, kAcquireBuckets);
  acquire_error_ = &acquire.Add({{"result", "error"}}, kAcquireBuckets);
  cold_starts_ = &prometheus::BuildCounter()
                      .Name("loadstar_cold_starts_total")
                      .Help("Acquires that waited for an instance to load")
                      .Register(r)
                      .Add({});
  state_write_failures_ = &prometheus::BuildCounter()
                               .Name("loadstar_state_write_failures_total")
                               .Help("State store writes that failed (their RPCs failed)")
                               .Register(r)
                               .Add({});
  auto& instances =
      prometheus::BuildGauge().Name("loadstar_instances").Help("Model instances by state").Register(r);
  for (const char* state : {"pending", "loading", "ready", "unloading"}) {
    instances_[state] = &instances.Add({{"state", state}});
  }
  auto& workers = prometheus::BuildGauge()
                      .Name("loadstar_workers")
                      .Help("Registered workers by liveness")
                      .Register(r);
  for (const char* state : {"alive", "lost"}) workers_[state] = &workers.Add({{"state", state}});
  leases_ = &prometheus::BuildGauge().Name("loadstar_leases").Help("Live leases").Register(r).Add({});
  deployments_ =
      &prometheus::BuildGauge().Name("loadstar_deployments").Help("Deployments").Register(r).Add({});
  refresh_id_ = server->AddRefresh([this] { Refresh(); });
}

ControllerMetrics::~ControllerMetrics() { server_->RemoveRefresh(refresh_id_); }

void ControllerMetrics::RecordAcquire(double seconds, bool ok, bool cold_start) {
  (ok ? acquire_ok_ : acquire_error_)->Observe(seconds);
  if (ok && cold_start) cold_starts_->Increment();
}

void ControllerMetrics::RecordStateWriteFailure() { state_write_failures_->Increment(); }

void ControllerMetrics::Refresh() {
  std::shared_ptr<Controller> controller = slot_->Get();
  std::map<std::string, double> instances;
  double leases = 0;
  std::vector<loadstar::v1::Deployment> deployments;
  std::vector<loadstar::v1::WorkerStatus> workers_now;
  if (controller != nullptr) {
    deployments = controller->ListDeployments();
    workers_now = controller->ListWorkers();
  }
  for (const loadstar::v1::Deployment& d : deployments) {
    for (const loadstar::v1::Instance& i : d.instances()) {
      ++instances[i.state()];
      leases += i.leases();
    }
  }
  for (auto& [state, gauge] : instances_) gauge->Set(instances[state]);
  std::map<std::string, double> workers;
  for (const loadstar::v1::WorkerStatus& w : workers_now) ++workers[w.state()];
  for (auto& [state, gauge] : workers_) gauge->Set(workers[state]);
  leases_->Set(leases);
  deployments_->Set(static_cast<double>(deployments.size()));
}

}  // namespace loadstar::daemon
