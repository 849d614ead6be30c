// StateStore in etcd (SPEC §7 High availability): `state: etcd://HOST:PORT[,...]/PREFIX`.
// Meets the StateStore contract (state_store.h) with one etcd transaction per batch,
// which etcd applies atomically and durably (raft quorum, fsynced) before answering.
//
// Layout under PREFIX (each name percent-escaped, so no component holds a '/'):
//   /deployments/<name>                     DeploymentRecord (JSON)
//   /instances/<deployment>/<id>            InstanceRecord
//   /leases/<deployment>/<instance>/<id>    LeaseRecord
//   /workers/<id>                           WorkerRecord (info base64)
// so deleting a deployment or an instance with everything of it is a few range deletes
// whatever the number of leases, inside etcd's 128 operations per transaction. An index
// (instance -> deployment, lease -> its key), rebuilt by Load and kept by Commit, finds
// the key of a record named by id only.
//
// Fencing: with SetFence(key, create_revision), every transaction also compares the
// key's create revision; a controller whose leadership key was replaced (its etcd lease
// expired and another controller was elected) has every write refused, in etcd itself,
// with UNAVAILABLE "no longer the leader".
//
// Thread safety: every method may be called concurrently; commits are serialized.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/etcd_client.h"
#include "daemon/state_store.h"

namespace loadstar::daemon {

class EtcdStateStore : public StateStore {
 public:
  // Reads the index; UNAVAILABLE when no endpoint answers.
  static absl::StatusOr<std::unique_ptr<EtcdStateStore>> Open(const std::string& spec);

  std::vector<absl::Status> Commit(const std::vector<StateBatch>& batches) override;
  absl::StatusOr<StateSnapshot> Load() override;

  void SetFence(std::string key, int64_t create_revision);
  void ClearFence();

  EtcdClient* client() { return &client_; }
  const std::string& prefix() const { return prefix_; }

 private:
  EtcdStateStore(EtcdSpec spec);
  struct LeaseAt {
    std::string deployment, instance;
  };
  // The ops of one batch, and its index changes applied to copies (committed on success).
  void AddWrite(const StateWrite& write, etcdserverpb::TxnRequest* txn,
                        std::map<std::string, std::string>* instances,
                std::map<std::string, LeaseAt>* leases) const;
  absl::StatusOr<std::vector<mvccpb::KeyValue>> RangePrefix(const std::string& prefix)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  template <typename Record>
  absl::Status ReadAll(const std::string& prefix, std::vector<Record>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::string DeploymentKey(const std::string& name) const;
  std::string InstanceKey(const std::string& deployment, const std::string& id) const;
  std::string LeaseKey(const LeaseAt& at, const std::string& id) const;
  std::string WorkerKey(const std::string& id) const;

  EtcdClient client_;
  const std::string prefix_;
  absl::Mutex mu_;  // serializes commits and guards the index and the fence
  std::map<std::string, std::string> instance_deployment_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, LeaseAt> lease_at_ ABSL_GUARDED_BY(mu_);
  std::optional<std::pair<std::string, int64_t>> fence_ ABSL_GUARDED_BY(mu_);
};

// Escapes '/' and '%' (and control bytes) as %XX so a name is one key component.
std::string EscapeKeyComponent(const std::string& name);

}  // namespace loadstar::daemon
