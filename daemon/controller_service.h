// The gRPC Controller service: each method calls Controller and converts the Status. The
// bearer token is checked before any handler runs (MakeServerCredentials, daemon/tls.h).
#pragma once

#include "daemon/controller.h"
#include "daemon/controller_metrics.h"
#include "daemon/controller_slot.h"
#include "daemon/rpc_util.h"
#include "loadstar/v1/controller.grpc.pb.h"

namespace loadstar::daemon {

class ControllerService final : public loadstar::v1::Controller::Service {
 public:
  // The bearer token is checked before any handler runs (MakeServerCredentials).
  // `metrics` (may be null) records each Acquire.
  explicit ControllerService(const ControllerSlot* slot, ControllerMetrics* metrics = nullptr)
      : slot_(slot), metrics_(metrics) {}

  grpc::Status Deploy(grpc::ServerContext* ctx, const loadstar::v1::DeployRequest* req,
                      loadstar::v1::DeployResponse* resp) override;
  grpc::Status Delete(grpc::ServerContext* ctx, const loadstar::v1::NameRequest* req,
                      loadstar::v1::DeleteResponse* resp) override;
  grpc::Status GetDeployment(grpc::ServerContext* ctx, const loadstar::v1::NameRequest* req,
                             loadstar::v1::Deployment* resp) override;
  grpc::Status ListDeployments(grpc::ServerContext* ctx,
                               const loadstar::v1::ListDeploymentsRequest* req,
                               loadstar::v1::ListDeploymentsResponse* resp) override;
  grpc::Status WatchDeployment(grpc::ServerContext* ctx, const loadstar::v1::NameRequest* req,
                               grpc::ServerWriter<loadstar::v1::DeploymentEvent>* writer) override;
  grpc::Status Acquire(grpc::ServerContext* ctx, const loadstar::v1::AcquireRequest* req,
                       loadstar::v1::Lease* resp) override;
  grpc::Status GetLease(grpc::ServerContext* ctx, const loadstar::v1::LeaseRequest* req,
                        loadstar::v1::Lease* resp) override;
  grpc::Status RenewLease(grpc::ServerContext* ctx, const loadstar::v1::LeaseRequest* req,
                          loadstar::v1::Lease* resp) override;
  grpc::Status Release(grpc::ServerContext* ctx, const loadstar::v1::LeaseRequest* req,
                       loadstar::v1::ReleaseResponse* resp) override;
  grpc::Status ListWorkers(grpc::ServerContext* ctx, const loadstar::v1::ListWorkersRequest* req,
                           loadstar::v1::ListWorkersResponse* resp) override;
  grpc::Status RegisterWorker(grpc::ServerContext* ctx, const loadstar::v1::WorkerInfo* req,
                              loadstar::v1::RegisterWorkerResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const loadstar::v1::WorkerInfo* req,
                         loadstar::v1::HeartbeatResponse* resp) override;

 private:
  const ControllerSlot* const slot_;
  ControllerMetrics* const metrics_;
};

}  // namespace loadstar::daemon
