// A StateStore that reports each failed batch (to the state-write failure counter of
// controller_metrics.h) and otherwise passes everything through to the store it wraps.
//
// Thread safety: as the wrapped store; `on_failure` may be called from any committing thread.
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "daemon/state_store.h"

namespace loadstar::daemon {

class MeteredStateStore : public StateStore {
 public:
  MeteredStateStore(StateStore* target, std::function<void()> on_failure)
      : target_(target), on_failure_(std::move(on_failure)) {}

  std::vector<absl::Status> Commit(const std::vector<StateBatch>& batches) override {
    std::vector<absl::Status> results = target_->Commit(batches);
    for (const absl::Status& r : results) {
      if (!r.ok()) on_failure_();
    }
    return results;
  }
  absl::StatusOr<StateSnapshot> Load() override { return target_->Load(); }

 private:
  StateStore* const target_;
  const std::function<void()> on_failure_;
};

}  // namespace loadstar::daemon
