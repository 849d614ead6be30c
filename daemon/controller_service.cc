#include "daemon/controller_service.h"

#include <chrono>

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

// The controller of this leadership term, or UNAVAILABLE between terms. The leadership
// gate in front of the service (MakeServerCredentials' admit check) answers first as a
// rule; this covers a call that raced a step-down.
#define CURRENT_CONTROLLER(c)                                                              \
  std::shared_ptr<Controller> c = slot_->Get();                                            \
  if (c == nullptr) {                                                                      \
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "this controller is not the leader"); \
  }

namespace {
// Acquire without a client deadline still gives up eventually.
constexpr int64_t kDefaultAcquireWaitMs = 300'000;
}  // namespace

grpc::Status ControllerService::Deploy(grpc::ServerContext* ctx, const v1::DeployRequest* req,
                                       v1::DeployResponse* resp) {
  CURRENT_CONTROLLER(c);
  auto d = c->Deploy(req->config_yaml(), req->replace());
  if (!d.ok()) return ToGrpc(d.status());
  *resp->mutable_deployment() = *d;
  return grpc::Status::OK;
}

grpc::Status ControllerService::Delete(grpc::ServerContext* ctx, const v1::NameRequest* req,
                                       v1::DeleteResponse*) {
  CURRENT_CONTROLLER(c);
  return ToGrpc(c->Delete(req->name()));
}

grpc::Status ControllerService::GetDeployment(grpc::ServerContext* ctx, const v1::NameRequest* req,
                                              v1::Deployment* resp) {
  CURRENT_CONTROLLER(c);
  return Respond(c->GetDeployment(req->name()), resp);
}

grpc::Status ControllerService::ListDeployments(grpc::ServerContext* ctx,
                                                const v1::ListDeploymentsRequest*,
                                                v1::ListDeploymentsResponse* resp) {
  CURRENT_CONTROLLER(c);
  for (v1::Deployment& d : c->ListDeployments()) *resp->add_deployments() = std::move(d);
  return grpc::Status::OK;
}

grpc::Status ControllerService::WatchDeployment(grpc::ServerContext* ctx,
                                                const v1::NameRequest* req,
                                                grpc::ServerWriter<v1::DeploymentEvent>* writer) {
  CURRENT_CONTROLLER(c);
  return ToGrpc(c->WatchDeployment(req->name(), [&](const v1::DeploymentEvent& e) {
    return !ctx->IsCancelled() && writer->Write(e);
  }));
}

grpc::Status ControllerService::Acquire(grpc::ServerContext* ctx, const v1::AcquireRequest* req,
                                        v1::Lease* resp) {
  CURRENT_CONTROLLER(c);
  int64_t now_ms = Clock::Real()->NowMillis();
  int64_t deadline_ms = now_ms + kDefaultAcquireWaitMs;
  auto deadline = ctx->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    // Answer a little before the client's deadline so it gets our reason, not a bare
    // DEADLINE_EXCEEDED from its own stack.
    deadline_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline.time_since_epoch()).count() - 50;
  }
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<v1::Lease> lease =
      c->Acquire(req->deployment(), req->ttl_seconds(), deadline_ms);
  if (metrics_ != nullptr) {
    metrics_->RecordAcquire(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
        lease.ok(), lease.ok() && lease->cold_start());
  }
  return Respond(std::move(lease), resp);
}

grpc::Status ControllerService::GetLease(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                         v1::Lease* resp) {
  CURRENT_CONTROLLER(c);
  return Respond(c->GetLease(req->lease_id()), resp);
}

grpc::Status ControllerService::RenewLease(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                           v1::Lease* resp) {
  CURRENT_CONTROLLER(c);
  return Respond(c->RenewLease(req->lease_id()), resp);
}

grpc::Status ControllerService::Release(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                        v1::ReleaseResponse*) {
  CURRENT_CONTROLLER(c);
  return ToGrpc(c->Release(req->lease_id()));
}

grpc::Status ControllerService::ListWorkers(grpc::ServerContext* ctx,
                                            const v1::ListWorkersRequest*,
                                            v1::ListWorkersResponse* resp) {
  CURRENT_CONTROLLER(c);
  for (v1::WorkerStatus& w : c->ListWorkers()) *resp->add_workers() = std::move(w);
  return grpc::Status::OK;
}

grpc::Status ControllerService::RegisterWorker(grpc::ServerContext* ctx, const v1::WorkerInfo* req,
                                               v1::RegisterWorkerResponse* resp) {
  CURRENT_CONTROLLER(c);
  resp->set_heartbeat_interval_ms(c->heartbeat_interval_ms());
  return ToGrpc(c->RegisterWorker(*req));
}

grpc::Status ControllerService::Heartbeat(grpc::ServerContext* ctx, const v1::WorkerInfo* req,
                                          v1::HeartbeatResponse*) {
  CURRENT_CONTROLLER(c);
  return ToGrpc(c->Heartbeat(*req));
}

}  // namespace loadstar::daemon
