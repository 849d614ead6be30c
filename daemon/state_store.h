// StateStore: where the controller persists what it must not forget across a restart
// (deployments, instances it placed, leases, worker records). The controller keeps the
// live state in memory and writes through; on start it reads everything back with Load()
// and reconciles with what workers report.
//
// Implementations: MemoryStateStore (tests, `--state memory`) and SqliteStateStore (WAL;
// the default). Both pass tests/daemon/state_store_test.cc.
//
// Thread safety: every method may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loadstar::daemon {

struct DeploymentRecord {
  std::string name;
  std::string config_yaml;  // normalized (DeploymentConfigToYaml)
  int64_t created_unix_ms = 0;
  bool operator==(const DeploymentRecord&) const = default;
};

struct InstanceRecord {
  std::string instance_id;
  std::string deployment;
  std::string worker_id;
  std::string state;  // as last known: loading | ready
  int64_t idle_since_unix_ms = 0;
  std::string devices;  // device indices on the worker, "0,1"
  uint64_t bytes_per_device = 0;
  // ConfigDigest of the deployment config it was loaded with (an update makes it outdated).
  std::string config_digest;
  bool operator==(const InstanceRecord&) const = default;
};

struct LeaseRecord {
  std::string lease_id;
  std::string deployment;
  std::string instance_id;
  int64_t expires_unix_ms = 0;
  double ttl_seconds = 0;
  bool operator==(const LeaseRecord&) const = default;
};

struct WorkerRecord {
  std::string worker_id;
  std::string address;
  std::string info;  // serialized loadstar.v1.WorkerInfo
  int64_t last_heartbeat_unix_ms = 0;
  bool operator==(const WorkerRecord&) const = default;
};

struct StateSnapshot {
  std::vector<DeploymentRecord> deployments;  // each list sorted by its id
  std::vector<InstanceRecord> instances;
  std::vector<LeaseRecord> leases;
  std::vector<WorkerRecord> workers;
};

class StateStore {
 public:
  virtual ~StateStore() = default;
  // Put* insert or replace by id; Delete* of a missing id is OK.
  virtual absl::Status PutDeployment(const DeploymentRecord& record) = 0;
  // Also deletes the deployment's instances and leases.
  virtual absl::Status DeleteDeployment(const std::string& name) = 0;
  virtual absl::Status PutInstance(const InstanceRecord& record) = 0;
  // Also deletes the instance's leases.
  virtual absl::Status DeleteInstance(const std::string& instance_id) = 0;
  virtual absl::Status PutLease(const LeaseRecord& record) = 0;
  virtual absl::Status DeleteLease(const std::string& lease_id) = 0;
  virtual absl::Status PutWorker(const WorkerRecord& record) = 0;
  virtual absl::Status DeleteWorker(const std::string& worker_id) = 0;
  virtual absl::StatusOr<StateSnapshot> Load() = 0;
};

std::unique_ptr<StateStore> NewMemoryStateStore();
// Opens (creating if needed) a SQLite database in WAL mode at `path`.
absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path);
// "memory" or "sqlite:PATH".
absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(const std::string& spec);

}  // namespace loadstar::daemon
