#include "daemon/worker_service.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

namespace {
// A byte-stream sink for ReadTensor / ReadModelFile: each piece becomes one TensorChunk;
// false (stop) once the caller went away.
std::function<bool(uint64_t, std::string_view)> ChunkWriter(
    grpc::ServerContext* ctx, grpc::ServerWriter<v1::TensorChunk>* writer) {
  return [ctx, writer](uint64_t offset, std::string_view data) {
    v1::TensorChunk chunk;
    chunk.set_offset(offset);
    chunk.set_data(std::string(data));
    return !ctx->IsCancelled() && writer->Write(chunk);
  };
}
}  // namespace

grpc::Status WorkerService::LoadInstance(grpc::ServerContext* ctx,
                                         const v1::LoadInstanceRequest* req,
                                         grpc::ServerWriter<v1::LoadProgress>* writer) {
  auto report = manager_->Load(*req, [&](const LoadProgressInfo& p) {
    v1::LoadProgress msg;
    msg.set_bytes_done(p.bytes_done);
    msg.set_bytes_total(p.bytes_total);
    msg.set_tensors_done(p.tensors_done);
    msg.set_tensors_total(p.tensors_total);
    // A controller that went away (or cancelled) cancels the load.
    return !ctx->IsCancelled() && writer->Write(msg);
  });
  if (metrics_ != nullptr) metrics_->RecordLoad(*req, report);
  if (!report.ok()) return ToGrpc(report.status());
  if (ctx->IsCancelled()) {
    manager_->Unload(req->instance_id()).IgnoreError();
    return grpc::Status(grpc::StatusCode::CANCELLED, "the controller cancelled the load");
  }
  v1::LoadProgress done;
  done.set_done(true);
  done.set_bytes_done(report->bytes());
  done.set_bytes_total(report->bytes());
  *done.mutable_instance() = *report;
  writer->Write(done);
  return grpc::Status::OK;
}

grpc::Status WorkerService::UnloadInstance(grpc::ServerContext* ctx, const v1::InstanceRequest* req,
                                           v1::UnloadInstanceResponse*) {
  return ToGrpc(manager_->Unload(req->instance_id()));
}

grpc::Status WorkerService::GetInstance(grpc::ServerContext* ctx, const v1::InstanceRequest* req,
                                        v1::InstanceHandle* resp) {
  return Respond(manager_->GetInstance(req->instance_id()), resp);
}

grpc::Status WorkerService::ReadTensor(grpc::ServerContext* ctx, const v1::ReadTensorRequest* req,
                                       grpc::ServerWriter<v1::TensorChunk>* writer) {
  return ToGrpc(manager_->ReadTensor(*req, ChunkWriter(ctx, writer)));
}

grpc::Status WorkerService::ReadModelFile(grpc::ServerContext* ctx,
                                          const v1::ReadModelFileRequest* req,
                                          grpc::ServerWriter<v1::TensorChunk>* writer) {
  return ToGrpc(manager_->ReadModelFile(*req, ChunkWriter(ctx, writer)));
}

grpc::Status WorkerService::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                                       v1::ListModelsResponse* resp) {
  auto models = manager_->loader()->ListModels();
  if (!models.ok()) return ToGrpc(models.status());
  for (v1::StoredModel& m : *models) *resp->add_models() = std::move(m);
  return grpc::Status::OK;
}

grpc::Status WorkerService::Prefetch(grpc::ServerContext* ctx, const v1::ModelRequest* req,
                                     v1::CacheResponse* resp) {
  absl::Status s = manager_->loader()->Prefetch(req->model());
  resp->set_host_cache_used(manager_->loader()->host_cache_used());
  return ToGrpc(s);
}

grpc::Status WorkerService::Evict(grpc::ServerContext* ctx, const v1::ModelRequest* req,
                                  v1::CacheResponse* resp) {
  absl::Status s = manager_->loader()->Evict(req->model());
  resp->set_host_cache_used(manager_->loader()->host_cache_used());
  return ToGrpc(s);
}

grpc::Status WorkerService::PlanLoad(grpc::ServerContext* ctx,
                                     const v1::PlanLoadRequest* req,
                                     v1::PlanLoadResponse* resp) {
  return Respond(manager_->loader()->PlanLoad(req->spec()), resp);
}

grpc::Status WorkerService::Probe(grpc::ServerContext* ctx, const v1::ProbeRequest* req,
                                  v1::ProbeResponse* resp) {
  return Respond(manager_->Probe(*req), resp);
}

}  // namespace loadstar::daemon
