#include "daemon/servers.h"

#include <fmt/format.h>
#include <unistd.h>

#include <mutex>

#include "base/status_macros.h"
#include "daemon/controller_service.h"
#include "daemon/etcd_state_store.h"
#include "daemon/worker_service.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace loadstar::daemon {

std::string WithPort(const std::string& address, int port) {
  size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  return fmt::format("{}:{}", host, port);
}

namespace {

// A started server for `service` on `address`, with the token checked before any handler
// (MakeServerCredentials), message size limits, health and reflection. Starts NOT_SERVING.
absl::StatusOr<std::unique_ptr<grpc::Server>> Serve(const std::string& address, const TlsFiles& tls,
                                                    const std::string& token,
                                                    grpc::Service* service, int* port,
                                                    AdmitCheck admit = nullptr) {
  // Both are process-wide switches, read when a builder is made and built.
  static std::once_flag once;
  std::call_once(once, [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  });
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   MakeServerCredentials(tls, token, std::move(admit)));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, credentials, port);
  builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError(fmt::format("cannot listen on {} (in use?)", address));
  }
  server->GetHealthCheckService()->SetServingStatus(false);
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

absl::StatusOr<ClientSecurity> MakeClientSecurity(const TlsFiles& tls, const std::string& token) {
  ClientSecurity security;
  ASSIGN_OR_RETURN(security.credentials, MakeChannelCredentials(tls));
  security.auth = TokenAuth(token);
  return security;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    ControllerServerOptions options) {
  std::unique_ptr<ControllerServer> s(new ControllerServer());
  s->options_ = options;
  ASSIGN_OR_RETURN(ClientSecurity to_workers, MakeClientSecurity(options.tls, options.token));
  if (options.state.rfind("etcd://", 0) == 0) {
    ASSIGN_OR_RETURN(std::unique_ptr<EtcdStateStore> etcd, EtcdStateStore::Open(options.state));
    s->etcd_ = etcd.get();
    s->state_ = std::move(etcd);
  } else {
    ASSIGN_OR_RETURN(s->state_, OpenStateStore(options.state));
  }
  s->workers_ = std::make_unique<GrpcWorkerClientFactory>(std::move(to_workers));
  if (options.metrics != nullptr) {
    s->metrics_ = std::make_unique<ControllerMetrics>(options.metrics, &s->slot_);
  }
  s->service_ = std::make_unique<ControllerService>(&s->slot_, s->metrics_.get());
  AdmitCheck admit;
  if (s->etcd_ != nullptr) {
    admit = [server = s.get()] { return server->AdmitAsLeader(); };
  } else {
    // The only controller: it leads from the start, over the state it recovers now.
    ASSIGN_OR_RETURN(std::shared_ptr<Controller> controller, s->NewController());
    s->slot_.Set(std::move(controller));
  }
  int port = 0;
  ASSIGN_OR_RETURN(s->server_, Serve(options.address, options.tls, options.token,
                                     s->service_.get(), &port, std::move(admit)));
  s->address_ = Advertised(options.address, port);
  if (s->etcd_ == nullptr) {
    s->server_->GetHealthCheckService()->SetServingStatus(true);
    return s;
  }
  // Under etcd: SERVING (ready) only while leading, so a Kubernetes Service in front of
  // the controllers routes to the leader alone.
  LeaderElection::Options e;
  e.etcd = s->etcd_->client();
  e.key = s->etcd_->prefix() + "/leader";
  e.identity = s->address_;
  e.ttl_seconds = options.election_ttl_seconds;
  e.on_elected = [server = s.get(), key = e.key](int64_t revision) -> absl::Status {
    server->etcd_->SetFence(key, revision);
    ASSIGN_OR_RETURN(std::shared_ptr<Controller> controller, server->NewController());
    server->slot_.Set(std::move(controller));
    server->server_->GetHealthCheckService()->SetServingStatus(true);
    return absl::OkStatus();
  };
  e.on_deposed = [server = s.get()] {
    server->server_->GetHealthCheckService()->SetServingStatus(false);
    if (std::shared_ptr<Controller> old = server->slot_.Set(nullptr)) old->Stop();
  };
  s->election_ = std::make_unique<LeaderElection>(std::move(e));
  s->election_->Start();
  return s;
}

absl::StatusOr<std::shared_ptr<Controller>> ControllerServer::NewController() {
  ControllerOptions copts;
  copts.state = state_.get();
  copts.workers = workers_.get();
  copts.heartbeat_interval_seconds = options_.heartbeat_interval_seconds;
  copts.heartbeat_timeout_seconds = options_.heartbeat_timeout_seconds;
  copts.default_lease_ttl_seconds = options_.default_lease_ttl_seconds;
  ASSIGN_OR_RETURN(std::unique_ptr<Controller> controller, Controller::Create(copts));
  return std::shared_ptr<Controller>(std::move(controller));
}

absl::Status ControllerServer::AdmitAsLeader() const {
  if (election_ != nullptr && election_->is_leader() && slot_.Get() != nullptr) {
    return absl::OkStatus();
  }
  std::string leader = election_ == nullptr ? "" : election_->leader();
  if (leader.empty() || leader == address_) {
    return absl::UnavailableError(fmt::format(
        "controller {} is not the leader and no leader is elected yet; retry shortly", address_));
  }
  return absl::UnavailableError(
      fmt::format("controller {} is not the leader; {}{}", address_, kLeaderIsAt, leader));
}

ControllerServer::~ControllerServer() { Shutdown(); }

void ControllerServer::Shutdown() {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  // Stepping down first hands the leadership over at once (the lease is revoked).
  if (election_ != nullptr) election_->Stop();
  // Streams (WatchDeployment) and waiting Acquires end once the controller stops, so the
  // grace period can be short.
  if (std::shared_ptr<Controller> c = slot_.Get()) c->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  server_->Wait();
  server_.reset();
  election_.reset();
  metrics_.reset();
  slot_.Set(nullptr);
}

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(
    WorkerServerOptions options, std::unique_ptr<InstanceLoader> loader) {
  std::unique_ptr<WorkerServer> s(new WorkerServer());
  ASSIGN_OR_RETURN(ClientSecurity to_controller, MakeClientSecurity(options.tls, options.token));
  s->loader_ = std::move(loader);
  // The advertised address needs the bound port, known only once the server runs: the
  // manager starts without an identity and gets it below, before registration.
  s->manager_ = std::make_unique<WorkerManager>(options.worker_id, "", s->loader_.get());
  if (options.metrics != nullptr) {
    s->metrics_ = std::make_unique<WorkerMetrics>(options.metrics, s->manager_.get());
  }
  s->service_ = std::make_unique<WorkerService>(s->manager_.get(), s->metrics_.get());
  int port = 0;
  ASSIGN_OR_RETURN(s->server_,
                   Serve(options.address, options.tls, options.token, s->service_.get(), &port));
  s->address_ = Advertised(options.address, port);
  std::string id = options.worker_id;
  if (id.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    id = fmt::format("{}-{}", host, port);
  }
  s->manager_->SetIdentity(id, s->address_);
  grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService();
  if (options.controller_address.empty()) {
    health->SetServingStatus(true);
  } else {
    s->agent_ = std::make_unique<WorkerAgent>(
        s->manager_.get(), options.controller_address, std::move(to_controller),
        [health](bool registered) { health->SetServingStatus(registered); });
    s->agent_->Start();
  }
  return s;
}

WorkerServer::~WorkerServer() { Shutdown(); }

void WorkerServer::Shutdown() {
  if (agent_ != nullptr) agent_->Stop();
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  server_->Wait();
  server_.reset();
  metrics_.reset();
}

}  // namespace loadstar::daemon
