#include "daemon/servers.h"

#include <fmt/format.h>
#include <unistd.h>

#include "base/status_macros.h"
#include "daemon/controller_service.h"
#include "daemon/worker_service.h"

namespace loadstar::daemon {

std::string WithPort(const std::string& address, int port) {
  size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  return fmt::format("{}:{}", host, port);
}

namespace {

absl::StatusOr<std::unique_ptr<grpc::Server>> Serve(const std::string& address,
                                                    grpc::Service* service, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError(fmt::format("cannot listen on {} (in use?)", address));
  }
  return server;
}

// The address peers should dial: a wildcard host is replaced by this host's name.
std::string Advertised(const std::string& address, int port) {
  std::string a = WithPort(address, port);
  if (a.rfind("0.0.0.0:", 0) == 0 || a.rfind("[::]:", 0) == 0) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    return fmt::format("{}:{}", host, port);
  }
  return a;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    ControllerServerOptions options) {
  std::unique_ptr<ControllerServer> s(new ControllerServer());
  ASSIGN_OR_RETURN(s->state_, OpenStateStore(options.state));
  s->workers_ = std::make_unique<GrpcWorkerClientFactory>(TokenAuth(options.token));
  ControllerOptions copts;
  copts.state = s->state_.get();
  copts.workers = s->workers_.get();
  copts.heartbeat_interval_seconds = options.heartbeat_interval_seconds;
  copts.heartbeat_timeout_seconds = options.heartbeat_timeout_seconds;
  copts.default_lease_ttl_seconds = options.default_lease_ttl_seconds;
  ASSIGN_OR_RETURN(s->controller_, Controller::Create(copts));
  s->service_ = std::make_unique<ControllerService>(s->controller_.get(), TokenAuth(options.token));
  int port = 0;
  ASSIGN_OR_RETURN(s->server_, Serve(options.address, s->service_.get(), &port));
  s->address_ = Advertised(options.address, port);
  return s;
}

ControllerServer::~ControllerServer() { Shutdown(); }

void ControllerServer::Shutdown() {
  if (server_ == nullptr) return;
  // Streams (WatchDeployment) and waiting Acquires end once the controller stops, so the
  // grace period can be short.
  controller_->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  server_->Wait();
  server_.reset();
  controller_.reset();
}

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(
    WorkerServerOptions options, std::unique_ptr<InstanceLoader> loader) {
  std::unique_ptr<WorkerServer> s(new WorkerServer());
  s->loader_ = std::move(loader);
  // The advertised address needs the bound port, known only once the server runs: the
  // manager starts without an identity and gets it below, before registration.
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  s->manager_ = std::make_unique<WorkerManager>(options.worker_id, "", s->loader_.get());
  s->service_ = std::make_unique<WorkerService>(s->manager_.get(), TokenAuth(options.token));
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || port == 0) {
    return absl::UnavailableError(fmt::format("cannot listen on {} (in use?)", options.address));
  }
  s->address_ = Advertised(options.address, port);
  std::string id = options.worker_id;
  if (id.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    id = fmt::format("{}-{}", host, port);
  }
  s->manager_->SetIdentity(id, s->address_);
  if (!options.controller_address.empty()) {
    s->agent_ = std::make_unique<WorkerAgent>(s->manager_.get(), options.controller_address,
                                              TokenAuth(options.token));
    s->agent_->Start();
  }
  return s;
}

WorkerServer::~WorkerServer() { Shutdown(); }

void WorkerServer::Shutdown() {
  if (agent_ != nullptr) agent_->Stop();
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  server_->Wait();
  server_.reset();
}

}  // namespace loadstar::daemon
