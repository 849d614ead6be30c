#include "deploy/client/client.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>

#include "base/status_macros.h"
#include "daemon/controller_endpoints.h"

namespace loadstar::client {

namespace v1 = loadstar::v1;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  std::unique_ptr<Client> c(new Client());
  c->address_ = options.address;
  if (c->address_.empty()) {
    const char* env = std::getenv("LOADSTAR_ADDR");
    c->address_ = env != nullptr && *env != '\0' ? env : "127.0.0.1:7070";
  }
  std::string token = options.token;
  if (token.empty()) {
    std::string file = options.token_file;
    if (file.empty()) {
      if (const char* env = std::getenv("LOADSTAR_TOKEN_FILE")) file = env;
    }
    ASSIGN_OR_RETURN(token, daemon::ReadTokenFile(file));
  }
  c->auth_ = daemon::TokenAuth(token);
  ASSIGN_OR_RETURN(c->credentials_, daemon::MakeChannelCredentials(
                                        daemon::ResolveClientTls(options.tls, options.tls_dir)));
  c->options_ = std::move(options);
  ASSIGN_OR_RETURN(std::vector<std::string> addresses, daemon::SplitAddresses(c->address_));
  absl::StatusOr<daemon::ControllerConnection> connection =
      daemon::ConnectToController(std::move(addresses), {c->credentials_, c->auth_});
  if (!connection.ok()) {
    return absl::UnavailableError(fmt::format("controller at {} is unreachable: {}",
                                              c->address_, std::string(connection.status().message())));
  }
  c->address_ = connection->address;
  c->controller_ = v1::Controller::NewStub(connection->channel);
  return c;
}

std::unique_ptr<grpc::ClientContext> Client::Context(double seconds) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  auth_.Apply(ctx.get());
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return ctx;
}

absl::Status Client::Check(const grpc::Status& s, const std::string& who) const {
  absl::Status status = daemon::FromGrpc(s);
  if (absl::IsUnavailable(status)) {
    return absl::UnavailableError(
        fmt::format("{} is unreachable: {}", who, std::string(status.message())));
  }
  return status;
}

v1::Worker::Stub* Client::WorkerStub(const std::string& address) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<v1::Worker::Stub>& stub = workers_[address];
  if (stub == nullptr) stub = v1::Worker::NewStub(daemon::MakeChannel(address, credentials_));
  return stub.get();
}

absl::StatusOr<std::unique_ptr<Lease>> Client::Acquire(const std::string& deployment,
                                                       double ttl_seconds,
                                                       double timeout_seconds) {
  if (ttl_seconds < 0) {
    return absl::InvalidArgumentError(fmt::format("ttl_seconds must be >= 0, not {}", ttl_seconds));
  }
  v1::AcquireRequest req;
  req.set_deployment(deployment);
  req.set_ttl_seconds(ttl_seconds);
  v1::Lease lease;
  RETURN_IF_ERROR(Check(controller_->Acquire(Context(timeout_seconds).get(), req, &lease),
                        "controller at " + address_));
  return std::make_unique<Lease>(this, std::move(lease));
}

absl::StatusOr<v1::Lease> Client::LeaseCall(
    grpc::Status (v1::Controller::Stub::*method)(grpc::ClientContext*, const v1::LeaseRequest&,
                                                 v1::Lease*),
    const std::string& lease_id) const {
  v1::LeaseRequest req;
  req.set_lease_id(lease_id);
  v1::Lease lease;
  RETURN_IF_ERROR(Check((controller_.get()->*method)(Context(options_.rpc_seconds).get(), req, &lease),
                        "controller at " + address_));
  return lease;
}

absl::StatusOr<v1::Lease> Client::GetLease(const std::string& lease_id) const {
  return LeaseCall(&v1::Controller::Stub::GetLease, lease_id);
}

absl::StatusOr<v1::Lease> Client::RenewLease(const std::string& lease_id) const {
  return LeaseCall(&v1::Controller::Stub::RenewLease, lease_id);
}

absl::Status Client::Release(const std::string& lease_id) const {
  v1::LeaseRequest req;
  req.set_lease_id(lease_id);
  v1::ReleaseResponse resp;
  return Check(controller_->Release(Context(options_.rpc_seconds).get(), req, &resp),
               "controller at " + address_);
}

absl::StatusOr<std::vector<v1::Deployment>> Client::ListDeployments() const {
  v1::ListDeploymentsResponse all;
  RETURN_IF_ERROR(Check(controller_->ListDeployments(Context(options_.rpc_seconds).get(), {}, &all),
                        "controller at " + address_));
  return std::vector<v1::Deployment>(all.deployments().begin(), all.deployments().end());
}

absl::StatusOr<v1::Instance> Client::FindInstance(const std::string& instance_id) const {
  ASSIGN_OR_RETURN(std::vector<v1::Deployment> all, ListDeployments());
  for (const v1::Deployment& d : all) {
    for (const v1::Instance& i : d.instances()) {
      if (i.instance_id() == instance_id) return i;
    }
  }
  return absl::NotFoundError(fmt::format("no deployment has an instance {}", instance_id));
}

absl::StatusOr<v1::InstanceHandle> Client::GetInstance(const std::string& worker_address,
                                                       const std::string& instance_id) const {
  v1::InstanceRequest req;
  req.set_instance_id(instance_id);
  v1::InstanceHandle handle;
  RETURN_IF_ERROR(
      Check(WorkerStub(worker_address)->GetInstance(Context(options_.rpc_seconds).get(), req, &handle),
            "worker at " + worker_address));
  return handle;
}

absl::StatusOr<std::string> Client::ReadTensor(const std::string& worker_address,
                                               const std::string& instance_id,
                                               const std::string& tensor) const {
  v1::ReadTensorRequest req;
  req.set_instance_id(instance_id);
  req.set_tensor(tensor);
  auto ctx = Context(options_.rpc_seconds * 10);
  auto reader = WorkerStub(worker_address)->ReadTensor(ctx.get(), req);
  std::string bytes;
  v1::TensorChunk chunk;
  while (reader->Read(&chunk)) {
    if (chunk.offset() != bytes.size()) {
      return absl::DataLossError(fmt::format("ReadTensor {}: chunk at {} after {} bytes", tensor,
                                             chunk.offset(), bytes.size()));
    }
    bytes += chunk.data();
  }
  RETURN_IF_ERROR(Check(reader->Finish(), "worker at " + worker_address));
  return bytes;
}

Lease::Lease(const Client* client, v1::Lease lease) : client_(client), lease_(std::move(lease)) {
  renewer_ = std::thread([this] { RenewLoop(); });
}

Lease::~Lease() { Release().IgnoreError(); }

absl::Status Lease::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return renew_status_;
}

void Lease::RenewLoop() {
  // A third of the TTL leaves two more tries before the lease would expire.
  const auto period = std::chrono::milliseconds(
      std::max<int64_t>(100, static_cast<int64_t>(lease_.ttl_seconds() * 1000 / 3)));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_cv_.wait_for(lock, period, [this] { return released_; })) {
    lock.unlock();
    absl::StatusOr<v1::Lease> renewed = client_->RenewLease(lease_.lease_id());
    lock.lock();
    if (!renewed.ok()) {
      renew_status_ = renewed.status();
      if (absl::IsNotFound(renewed.status())) return;  // expired: nothing left to renew
    }
  }
}

absl::StatusOr<v1::InstanceHandle> Lease::Handle() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (handle_.has_value()) return *handle_;
  }
  ASSIGN_OR_RETURN(v1::InstanceHandle handle,
                   client_->GetInstance(lease_.instance().worker_address(),
                                        lease_.instance().instance_id()));
  std::lock_guard<std::mutex> lock(mu_);
  handle_ = handle;
  return handle;
}

absl::Status Lease::Release() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (released_) return absl::OkStatus();
    released_ = true;
  }
  stop_cv_.notify_all();
  if (renewer_.joinable()) renewer_.join();
  return client_->Release(lease_.lease_id());
}

}  // namespace loadstar::client
