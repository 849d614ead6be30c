// The gRPC Worker service: each method calls WorkerManager and converts the Status. The
// bearer token is checked before any handler runs (MakeServerCredentials, daemon/tls.h).
#pragma once

#include "daemon/rpc_util.h"
#include "daemon/worker_manager.h"
#include "daemon/worker_metrics.h"
#include "loadstar/v1/worker.grpc.pb.h"

namespace loadstar::daemon {

class WorkerService final : public loadstar::v1::Worker::Service {
 public:
  // The bearer token is checked before any handler runs (MakeServerCredentials).
  // `metrics` (may be null) records each load.
  explicit WorkerService(WorkerManager* manager, WorkerMetrics* metrics = nullptr)
      : manager_(manager), metrics_(metrics) {}

  grpc::Status LoadInstance(grpc::ServerContext* ctx, const loadstar::v1::LoadInstanceRequest* req,
                            grpc::ServerWriter<loadstar::v1::LoadProgress>* writer) override;
  grpc::Status UnloadInstance(grpc::ServerContext* ctx, const loadstar::v1::InstanceRequest* req,
                              loadstar::v1::UnloadInstanceResponse* resp) override;
  grpc::Status GetInstance(grpc::ServerContext* ctx, const loadstar::v1::InstanceRequest* req,
                           loadstar::v1::InstanceHandle* resp) override;
  grpc::Status ReadTensor(grpc::ServerContext* ctx, const loadstar::v1::ReadTensorRequest* req,
                          grpc::ServerWriter<loadstar::v1::TensorChunk>* writer) override;
  grpc::Status ReadModelFile(grpc::ServerContext* ctx,
                             const loadstar::v1::ReadModelFileRequest* req,
                             grpc::ServerWriter<loadstar::v1::TensorChunk>* writer) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const loadstar::v1::ListModelsRequest* req,
                          loadstar::v1::ListModelsResponse* resp) override;
  grpc::Status Prefetch(grpc::ServerContext* ctx, const loadstar::v1::ModelRequest* req,
                        loadstar::v1::CacheResponse* resp) override;
  grpc::Status Evict(grpc::ServerContext* ctx, const loadstar::v1::ModelRequest* req,
                     loadstar::v1::CacheResponse* resp) override;
  grpc::Status Probe(grpc::ServerContext* ctx, const loadstar::v1::ProbeRequest* req,
                     loadstar::v1::ProbeResponse* resp) override;
  grpc::Status PlanLoad(grpc::ServerContext* ctx, const loadstar::v1::PlanLoadRequest* req,
                        loadstar::v1::PlanLoadResponse* resp) override;

 private:
  WorkerManager* const manager_;
  WorkerMetrics* const metrics_;
};

}  // namespace loadstar::daemon
