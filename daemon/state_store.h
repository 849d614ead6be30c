// StateStore: where the controller persists what it must not forget across a restart
// (deployments, instances it placed, leases, worker records). The controller keeps the
// live state in memory and writes through (daemon/state_writer.h queues and groups its
// writes); on start it reads everything back with Load() and reconciles with what workers
// report.
//
// Contract of Commit (the one write path; Put*/Delete* are one-write batches):
//  1. Batches apply in the order given, each atomically: all of its writes or none.
//  2. When Commit returns, every batch reported OK is durable: it survives a crash of the
//     controller process (SQLite: committed to the WAL; see sqlite_state_store.cc for
//     power loss).
//  3. A failed batch leaves nothing of itself behind and, unless the commit itself fails,
//     does not fail the other batches. Errors: UNAVAILABLE for a full disk, I/O errors or
//     a busy database (worth retrying later), INTERNAL otherwise; the message says why.
//
// Implementations: MemoryStateStore (tests, `--state memory`) and SqliteStateStore (WAL;
// the default). Both pass tests/daemon/state_store_test.cc.
//
// Thread safety: every method may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loadstar::daemon {

struct DeploymentRecord {
  std::string name;
  std::string config_yaml;  // normalized (DeploymentConfigToYaml)
  int64_t created_unix_ms = 0;
  // The failed state (max_load_failures reached): the status message, and the last
  // load error as its absl code number and message. Empty message: not failed.
  std::string failed_message{};
  int32_t last_error_code = 0;
  std::string last_error_message{};
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

// Deletions name the record. Deleting a missing record is OK.
struct DeploymentDeletion {  // also deletes the deployment's instances and leases
  std::string name;
};
struct InstanceDeletion {  // also deletes the instance's leases
  std::string instance_id;
};
struct LeaseDeletion {
  std::string lease_id;
};
struct WorkerDeletion {
  std::string worker_id;
};

// One change: a record inserts or replaces by its id; a deletion removes.
using StateWrite = std::variant<DeploymentRecord, DeploymentDeletion, InstanceRecord,
                                InstanceDeletion, LeaseRecord, LeaseDeletion, WorkerRecord,
                                WorkerDeletion>;
// Writes that land together or not at all (one RPC's change).
using StateBatch = std::vector<StateWrite>;

class StateStore {
 public:
  virtual ~StateStore() = default;
  // One status per batch (contract above).
  virtual std::vector<absl::Status> Commit(const std::vector<StateBatch>& batches) = 0;
  virtual absl::StatusOr<StateSnapshot> Load() = 0;

  // One write, committed on its own.
  absl::Status Write(StateWrite write);
  absl::Status PutDeployment(const DeploymentRecord& r) { return Write(r); }
  absl::Status DeleteDeployment(const std::string& name) { return Write(DeploymentDeletion{name}); }
  absl::Status PutInstance(const InstanceRecord& r) { return Write(r); }
  absl::Status DeleteInstance(const std::string& id) { return Write(InstanceDeletion{id}); }
  absl::Status PutLease(const LeaseRecord& r) { return Write(r); }
  absl::Status DeleteLease(const std::string& id) { return Write(LeaseDeletion{id}); }
  absl::Status PutWorker(const WorkerRecord& r) { return Write(r); }
  absl::Status DeleteWorker(const std::string& id) { return Write(WorkerDeletion{id}); }
};

std::unique_ptr<StateStore> NewMemoryStateStore();

struct SqliteStateStoreOptions {
  // PRAGMA max_page_count: a size quota, in pages of 4 KiB (0: SQLite's default, no
  // practical limit). Writes past it fail as on a full disk (SQLITE_FULL).
  int64_t max_page_count = 0;
};
// Opens (creating if needed) a SQLite database in WAL mode at `path`.
absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(
    const std::string& path, const SqliteStateStoreOptions& options = {});
// "memory" or "sqlite:PATH".
absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(const std::string& spec);

}  // namespace loadstar::daemon
