// The C++ attach client (SPEC §3.5): what an inference engine written in C++ links to use
// the weights loadstar loaded. It leases an instance from the controller, fetches the
// instance handle from the worker that holds it, and (mapped_instance.h) maps that
// memory with zero copies when the worker is on the same host.
//
//   auto client = loadstar::client::Client::Connect({});          // $LOADSTAR_ADDR
//   auto lease = (*client)->Acquire("opt-125m");                  // renews in background
//   auto handle = (*lease)->Handle();
//   auto mapped = loadstar::client::MappedInstance::Map(*handle);
//   const loadstar::client::TensorView* w = (*mapped)->Find("lm_head.weight");
//   ... use w->data ...;  lease.reset() releases it (after the mapping is gone).
//
// Thread safety: Client and Lease are thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <map>
#include <optional>

#include "absl/status/statusor.h"
#include "daemon/rpc_util.h"
#include "daemon/tls.h"
#include "loadstar/v1/controller.grpc.pb.h"
#include "loadstar/v1/worker.grpc.pb.h"

namespace loadstar::client {

struct ClientOptions {
  std::string address;     // controller HOST:PORT; empty: $LOADSTAR_ADDR or 127.0.0.1:7070
  std::string token;       // bearer token; empty: read token_file
  std::string token_file;  // empty: $LOADSTAR_TOKEN_FILE, if set
  // TLS (daemon/tls.h ResolveClientTls): these files, else $LOADSTAR_TLS_CA/_CERT/_KEY,
  // else the client files of tls_dir or $LOADSTAR_TLS_DIR; none: plaintext.
  daemon::TlsFiles tls;
  std::string tls_dir;
  double rpc_seconds = 30; // deadline of each call (Acquire: acquire_seconds)
};

class Lease;

class Client {
 public:
  // Talks to the controller that answers among the addresses (the leader, under etcd);
  // UNAVAILABLE naming them all when none does. One address is not probed: the first
  // call reports it unreachable.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options);

  const std::string& address() const { return address_; }

  // A lease on a ready instance of `deployment` (cold-starting one when needed, waiting
  // up to `timeout_seconds`), renewed every ttl/3 by a background thread until the Lease
  // is destroyed, which releases it. ttl_seconds 0: the controller's default.
  absl::StatusOr<std::unique_ptr<Lease>> Acquire(const std::string& deployment,
                                                 double ttl_seconds = 0,
                                                 double timeout_seconds = 600);

  // Controller calls, one each.
  absl::StatusOr<loadstar::v1::Lease> GetLease(const std::string& lease_id) const;
  absl::StatusOr<loadstar::v1::Lease> RenewLease(const std::string& lease_id) const;
  absl::Status Release(const std::string& lease_id) const;
  absl::StatusOr<std::vector<loadstar::v1::Deployment>> ListDeployments() const;
  // The instance `instance_id` as the controller lists it (its worker's address).
  absl::StatusOr<loadstar::v1::Instance> FindInstance(const std::string& instance_id) const;

  // Worker calls on the worker at `worker_address`.
  absl::StatusOr<loadstar::v1::InstanceHandle> GetInstance(const std::string& worker_address,
                                                           const std::string& instance_id) const;
  // The bytes of one tensor over ReadTensor (for remote consumers and verification).
  absl::StatusOr<std::string> ReadTensor(const std::string& worker_address,
                                         const std::string& instance_id,
                                         const std::string& tensor) const;

 private:
  Client() = default;
  std::unique_ptr<grpc::ClientContext> Context(double seconds) const;
  // Names the daemon that was dialled in connection errors.
  absl::Status Check(const grpc::Status& s, const std::string& who) const;
  loadstar::v1::Worker::Stub* WorkerStub(const std::string& address) const;
  // GetLease and RenewLease: the same request and answer.
  absl::StatusOr<loadstar::v1::Lease> LeaseCall(
      grpc::Status (loadstar::v1::Controller::Stub::*method)(
          grpc::ClientContext*, const loadstar::v1::LeaseRequest&, loadstar::v1::Lease*),
      const std::string& lease_id) const;

  ClientOptions options_;
  std::string address_;
  daemon::TokenAuth auth_{""};
  std::shared_ptr<grpc::ChannelCredentials> credentials_;  // null: plaintext
  std::unique_ptr<loadstar::v1::Controller::Stub> controller_;
  mutable std::mutex mu_;
  mutable std::map<std::string, std::unique_ptr<loadstar::v1::Worker::Stub>> workers_;
};

// A live lease. Renewed in the background; a failed renewal is kept and returned by
// status(). Destroying it stops renewing and releases the lease.
class Lease {
 public:
  Lease(const Client* client, loadstar::v1::Lease lease);
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  const loadstar::v1::Lease& lease() const { return lease_; }
  const std::string& id() const { return lease_.lease_id(); }
  // OK while every renewal so far succeeded.
  absl::Status status() const;
  // The instance handle from its worker (fetched once, then cached).
  absl::StatusOr<loadstar::v1::InstanceHandle> Handle();
  // Releases now (idempotent); the destructor calls it.
  absl::Status Release();

 private:
  void RenewLoop();

  const Client* const client_;
  const loadstar::v1::Lease lease_;
  mutable std::mutex mu_;
  std::condition_variable stop_cv_;
  bool released_ = false;
  absl::Status renew_status_;
  std::optional<loadstar::v1::InstanceHandle> handle_;
  std::thread renewer_;
};

}  // namespace loadstar::client
