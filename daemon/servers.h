// Running the daemons: a controller or a worker as a gRPC server on an address. Used by
// the `loadstar controller | worker | up` commands, the integration tests and the bench.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/controller.h"
#include "daemon/controller_metrics.h"
#include "daemon/controller_slot.h"
#include "daemon/etcd_state_store.h"
#include "daemon/leader_election.h"
#include "daemon/grpc_worker_client.h"
#include "daemon/instance_loader.h"
#include "daemon/metrics_server.h"
#include "daemon/tls.h"
#include "daemon/worker_agent.h"
#include "daemon/worker_manager.h"
#include "daemon/worker_metrics.h"
#include "grpcpp/grpcpp.h"

namespace loadstar::daemon {

struct ControllerServerOptions {
  std::string address = "127.0.0.1:7070";  // port 0 picks a free one
  std::string state = "memory";            // memory | sqlite:PATH
  std::string token;                       // empty: no auth
  // The listener's TLS, and the client side of the controller's calls to workers.
  TlsFiles tls;
  MetricsServer* metrics = nullptr;  // not owned; null: no metrics
  double heartbeat_interval_seconds = 1;
  double heartbeat_timeout_seconds = 3;
  double default_lease_ttl_seconds = 30;
  // state etcd://: the leader election's lease TTL (a dead leader is replaced within it).
  int64_t election_ttl_seconds = 5;
};

// Both servers also run the standard gRPC health service (grpc.health.v1.Health: the
// controller SERVING once its state is recovered, a worker once it has registered, or at
// once when it serves without a controller) and server reflection.
class ControllerServer {
 public:
  static absl::StatusOr<std::unique_ptr<ControllerServer>> Start(ControllerServerOptions options);
  ~ControllerServer();  // Shutdown()
  void Shutdown();
  // "host:port" with the port actually bound.
  const std::string& address() const { return address_; }
  // The controller of the current term (null while this process does not lead).
  std::shared_ptr<Controller> controller() const { return slot_.Get(); }
  bool is_leader() const { return slot_.Get() != nullptr; }

 private:
  ControllerServer() = default;
  absl::StatusOr<std::shared_ptr<Controller>> NewController();
  absl::Status AdmitAsLeader() const;

  ControllerServerOptions options_;
  std::string address_;
  std::unique_ptr<StateStore> state_;
  EtcdStateStore* etcd_ = nullptr;  // state_, when it is etcd
  std::unique_ptr<GrpcWorkerClientFactory> workers_;
  ControllerSlot slot_;
  std::unique_ptr<LeaderElection> election_;
  std::unique_ptr<ControllerMetrics> metrics_;
  std::unique_ptr<grpc::Service> service_;
  std::unique_ptr<grpc::Server> server_;
};

struct WorkerServerOptions {
  std::string worker_id;  // empty: "<hostname>-<port>"
  std::string address = "127.0.0.1:0";
  std::string controller_address;  // empty: serve without registering
  std::string token;
  // The listener's TLS, and the client side of the worker's calls to the controller.
  TlsFiles tls;
  MetricsServer* metrics = nullptr;  // not owned; null: no metrics
};

class WorkerServer {
 public:
  // Takes ownership of `loader`.
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(
      WorkerServerOptions options, std::unique_ptr<InstanceLoader> loader);
  ~WorkerServer();  // Shutdown()
  void Shutdown();
  const std::string& address() const { return address_; }
  WorkerManager* manager() const { return manager_.get(); }

 private:
  WorkerServer() = default;
  std::string address_;
  std::unique_ptr<InstanceLoader> loader_;
  std::unique_ptr<WorkerManager> manager_;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::unique_ptr<grpc::Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<WorkerAgent> agent_;
};

// Replaces the port of "host:port" with `port`.
std::string WithPort(const std::string& address, int port);

}  // namespace loadstar::daemon
