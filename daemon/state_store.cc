// What every StateStore shares: single writes and the `--state` spec.
#include "daemon/state_store.h"

#include "daemon/etcd_state_store.h"

namespace loadstar::daemon {

absl::Status StateStore::Write(StateWrite write) {
  std::vector<StateBatch> batches(1);
  batches[0].push_back(std::move(write));
  return Commit(batches)[0];
}

absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(const std::string& spec) {
  if (spec == "memory") return NewMemoryStateStore();
  if (spec.rfind("sqlite:", 0) == 0 && spec.size() > 7) return OpenSqliteStateStore(spec.substr(7));
  if (spec.rfind("etcd://", 0) == 0) {
    absl::StatusOr<std::unique_ptr<EtcdStateStore>> etcd = EtcdStateStore::Open(spec);
    if (!etcd.ok()) return etcd.status();
    return std::unique_ptr<StateStore>(std::move(*etcd));
  }
  return absl::InvalidArgumentError("state: '" + spec +
                                    "' is not memory, sqlite:PATH or etcd://HOST:PORT[,...]/PREFIX");
}

}  // namespace loadstar::daemon
