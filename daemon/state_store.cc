// What every StateStore shares: single writes and the `--state` spec.
#include "daemon/state_store.h"

namespace loadstar::daemon {

absl::Status StateStore::Write(StateWrite write) {
  std::vector<StateBatch> batches(1);
  batches[0].push_back(std::move(write));
  return Commit(batches)[0];
}

absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(const std::string& spec) {
  if (spec == "memory") return NewMemoryStateStore();
  if (spec.rfind("sqlite:", 0) == 0 && spec.size() > 7) return OpenSqliteStateStore(spec.substr(7));
  return absl::InvalidArgumentError("state: '" + spec + "' is not memory or sqlite:PATH");
}

}  // namespace loadstar::daemon
