#include "daemon/controller_service.h"

#include <chrono>

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

namespace {
// Acquire without a client deadline still gives up eventually.
constexpr int64_t kDefaultAcquireWaitMs = 300'000;
}  // namespace

grpc::Status ControllerService::Deploy(grpc::ServerContext* ctx, const v1::DeployRequest* req,
                                       v1::DeployResponse* resp) {
  auto d = controller_->Deploy(req->config_yaml(), req->replace());
  if (!d.ok()) return ToGrpc(d.status());
  *resp->mutable_deployment() = *d;
  return grpc::Status::OK;
}

grpc::Status ControllerService::Delete(grpc::ServerContext* ctx, const v1::NameRequest* req,
                                       v1::DeleteResponse*) {
  return ToGrpc(controller_->Delete(req->name()));
}

grpc::Status ControllerService::GetDeployment(grpc::ServerContext* ctx, const v1::NameRequest* req,
                                              v1::Deployment* resp) {
  return Respond(controller_->GetDeployment(req->name()), resp);
}

grpc::Status ControllerService::ListDeployments(grpc::ServerContext* ctx,
                                                const v1::ListDeploymentsRequest*,
                                                v1::ListDeploymentsResponse* resp) {
  for (v1::Deployment& d : controller_->ListDeployments()) *resp->add_deployments() = std::move(d);
  return grpc::Status::OK;
}

grpc::Status ControllerService::WatchDeployment(grpc::ServerContext* ctx,
                                                const v1::NameRequest* req,
                                                grpc::ServerWriter<v1::DeploymentEvent>* writer) {
  return ToGrpc(controller_->WatchDeployment(req->name(), [&](const v1::DeploymentEvent& e) {
    return !ctx->IsCancelled() && writer->Write(e);
  }));
}

grpc::Status ControllerService::Acquire(grpc::ServerContext* ctx, const v1::AcquireRequest* req,
                                        v1::Lease* resp) {
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
      controller_->Acquire(req->deployment(), req->ttl_seconds(), deadline_ms);
  if (metrics_ != nullptr) {
    metrics_->RecordAcquire(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
        lease.ok(), lease.ok() && lease->cold_start());
  }
  return Respond(std::move(lease), resp);
}

grpc::Status ControllerService::GetLease(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                         v1::Lease* resp) {
  return Respond(controller_->GetLease(req->lease_id()), resp);
}

grpc::Status ControllerService::RenewLease(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                           v1::Lease* resp) {
  return Respond(controller_->RenewLease(req->lease_id()), resp);
}

grpc::Status ControllerService::Release(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                        v1::ReleaseResponse*) {
  return ToGrpc(controller_->Release(req->lease_id()));
}

grpc::Status ControllerService::ListWorkers(grpc::ServerContext* ctx,
                                            const v1::ListWorkersRequest*,
                                            v1::ListWorkersResponse* resp) {
  for (v1::WorkerStatus& w : controller_->ListWorkers()) *resp->add_workers() = std::move(w);
  return grpc::Status::OK;
}

grpc::Status ControllerService::RegisterWorker(grpc::ServerContext* ctx, const v1::WorkerInfo* req,
                                               v1::RegisterWorkerResponse* resp) {
  resp->set_heartbeat_interval_ms(controller_->heartbeat_interval_ms());
  return ToGrpc(controller_->RegisterWorker(*req));
}

grpc::Status ControllerService::Heartbeat(grpc::ServerContext* ctx, const v1::WorkerInfo* req,
                                          v1::HeartbeatResponse*) {
  return ToGrpc(controller_->Heartbeat(*req));
}

}  // namespace loadstar::daemon
