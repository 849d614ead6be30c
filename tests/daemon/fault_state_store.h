// A StateStore over a real one that fails writes on demand, or holds them until the test
// lets them through (LevelDB's fault-injection style): for testing what a failed or slow
// state write leaves behind in the controller. Tests only.
//
//   FaultStateStore store(inner.get());
//   store.FailWrites();            // every batch fails UNAVAILABLE, nothing reaches `inner`
//   store.Heal();
//   store.HoldWrites();            // Commit blocks until ReleaseWrites()
//
// Thread safety: thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/state_store.h"

namespace loadstar::daemon::testing {

class FaultStateStore : public StateStore {
 public:
  explicit FaultStateStore(StateStore* target) : target_(target) {}

  void FailWrites(absl::Status status = absl::UnavailableError("injected: disk I/O error")) {
    absl::MutexLock lock(&mu_);
    failure_ = std::move(status);
  }
  void Heal() {
    absl::MutexLock lock(&mu_);
    failure_ = absl::OkStatus();
  }
  // Commits block (before touching the target) until ReleaseWrites.
  void HoldWrites() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  void ReleaseWrites() {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }
  // Commit calls blocked by HoldWrites right now, and the batches they carry.
  int waiting() const {
    absl::MutexLock lock(&mu_);
    return waiting_;
  }
  size_t waiting_batches() const {
    absl::MutexLock lock(&mu_);
    return waiting_batches_;
  }
  uint64_t failed_batches() const {
    absl::MutexLock lock(&mu_);
    return failed_batches_;
  }
  // Sizes of the Commit calls that reached the target, in order.
  std::vector<size_t> commits() const {
    absl::MutexLock lock(&mu_);
    return commits_;
  }

  std::vector<absl::Status> Commit(const std::vector<StateBatch>& batches) override {
    {
      absl::MutexLock lock(&mu_);
      ++waiting_;
      waiting_batches_ += batches.size();
      mu_.Await(absl::Condition(+[](bool* held) { return !*held; }, &held_));
      --waiting_;
      waiting_batches_ -= batches.size();
      if (!failure_.ok()) {
        failed_batches_ += batches.size();
        return std::vector<absl::Status>(batches.size(), failure_);
      }
      commits_.push_back(batches.size());
    }
    return target_->Commit(batches);
  }
  absl::StatusOr<StateSnapshot> Load() override { return target_->Load(); }

 private:
  StateStore* const target_;
  mutable absl::Mutex mu_;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  size_t waiting_batches_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t failed_batches_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<size_t> commits_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::daemon::testing
