#include "daemon/grpc_worker_client.h"

#include <chrono>
#include <optional>

#include "loadstar/v1/worker.grpc.pb.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

namespace {

// Unload is quick; a worker that does not answer in this time is treated as gone.
constexpr auto kUnloadTimeout = std::chrono::seconds(10);
// A plan reads manifests only (milliseconds); Deploy waits for it, so it is bounded.
constexpr auto kPlanTimeout = std::chrono::seconds(5);

class GrpcWorkerClient : public WorkerClient {
 public:
  GrpcWorkerClient(const std::string& address, const ClientSecurity& security)
      : stub_(v1::Worker::NewStub(MakeChannel(address, security.credentials))),
        auth_(security.auth) {}

  absl::StatusOr<v1::InstanceReport> LoadInstance(
      const v1::LoadInstanceRequest& request,
      const std::function<void(const v1::LoadProgress&)>& progress,
      CallCanceller* canceller) override {
    grpc::ClientContext ctx;
    auth_.Apply(&ctx);
    canceller->SetHook([&ctx] { ctx.TryCancel(); });
    auto reader = stub_->LoadInstance(&ctx, request);
    v1::LoadProgress msg;
    std::optional<v1::InstanceReport> report;
    while (reader->Read(&msg)) {
      if (msg.done()) {
        report = msg.instance();
      } else {
        progress(msg);
      }
    }
    grpc::Status status = reader->Finish();
    canceller->SetHook(nullptr);  // ctx dies with this frame
    if (!status.ok()) return FromGrpc(status);
    if (!report) return absl::InternalError("worker ended the load without a final report");
    return *report;
  }

  absl::Status UnloadInstance(const std::string& instance_id) override {
    grpc::ClientContext ctx;
    auth_.Apply(&ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + kUnloadTimeout);
    v1::InstanceRequest request;
    request.set_instance_id(instance_id);
    v1::UnloadInstanceResponse response;
    return FromGrpc(stub_->UnloadInstance(&ctx, request, &response));
  }

  absl::StatusOr<v1::PlanLoadResponse> PlanLoad(const v1::LoadSpec& spec) override {
    grpc::ClientContext ctx;
    auth_.Apply(&ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + kPlanTimeout);
    v1::PlanLoadRequest request;
    *request.mutable_spec() = spec;
    v1::PlanLoadResponse response;
    grpc::Status status = stub_->PlanLoad(&ctx, request, &response);
    if (!status.ok()) return FromGrpc(status);
    return response;
  }

 private:
  std::unique_ptr<v1::Worker::Stub> stub_;
  const TokenAuth auth_;
};

}  // namespace

std::shared_ptr<WorkerClient> GrpcWorkerClientFactory::ForAddress(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<WorkerClient>& client = clients_[address];
  if (client == nullptr) client = std::make_shared<GrpcWorkerClient>(address, security_);
  return client;
}

}  // namespace loadstar::daemon
