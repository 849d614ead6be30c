#include "daemon/state_writer.h"

#include <chrono>
#include <utility>
#include <vector>

#include "spdlog/spdlog.h"

namespace loadstar::daemon {

StateWriter::StateWriter(StateStore* store, size_t max_group)
    : store_(store), max_group_(max_group), thread_([this] { Loop(); }) {}

StateWriter::~StateWriter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

std::shared_ptr<StateWriter::Pending> StateWriter::Submit(StateBatch batch) {
  auto pending = std::make_shared<Pending>(this);
  absl::MutexLock lock(&mu_);
  queue_.push_back({std::move(batch), pending, {}});
  return pending;
}

void StateWriter::SubmitLogged(StateBatch batch, std::string what) {
  absl::MutexLock lock(&mu_);
  queue_.push_back({std::move(batch), nullptr, std::move(what)});
  ++logged_queued_;
}

StateWriter::Stats StateWriter::stats() const {
  absl::MutexLock lock(&mu_);
  Stats stats = stats_;
  stats.queued = queue_.size();
  return stats;
}

absl::Status StateWriter::Wait(Pending& pending) {
  absl::MutexLock lock(&mu_);
  auto can_lead = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !committing_ && !queue_.empty();
  };
  auto wake = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending.done || can_lead(); };
  while (!pending.done) {
    if (can_lead()) {
      CommitGroupLocked();
    } else {
      mu_.Await(absl::Condition(&wake));
    }
  }
  return pending.status;
}

void StateWriter::CommitGroupLocked() {
  committing_ = true;
  std::vector<Queued> group;
  while (!queue_.empty() && group.size() < max_group_) {
    group.push_back(std::move(queue_.front()));
    queue_.pop_front();
    if (group.back().pending == nullptr) --logged_queued_;
  }
  std::vector<StateBatch> batches;
  batches.reserve(group.size());
  for (Queued& q : group) batches.push_back(std::move(q.batch));
  mu_.Unlock();
  auto start = std::chrono::steady_clock::now();
  std::vector<absl::Status> results = store_->Commit(batches);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (size_t i = 0; i < group.size(); ++i) {
    if (group[i].pending == nullptr && !results[i].ok()) {
      spdlog::error("state store: writing {}: {}", group[i].what,
                    std::string(results[i].message()));
    }
  }
  mu_.Lock();
  for (size_t i = 0; i < group.size(); ++i) {
    stats_.failed += !results[i].ok();
    if (group[i].pending != nullptr) {
      group[i].pending->status = results[i];
      group[i].pending->done = true;
    }
  }
  ++stats_.commits;
  stats_.batches += group.size();
  stats_.commit_seconds += seconds;
  committing_ = false;
}

void StateWriter::Loop() {
  // Commits what no waiter will: background batches, and at the end whatever is left.
  absl::MutexLock lock(&mu_);
  auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !committing_ && (logged_queued_ > 0 || (stopping_ && !queue_.empty()));
  };
  auto wake = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return work() || (stopping_ && queue_.empty() && !committing_);
  };
  while (true) {
    mu_.Await(absl::Condition(&wake));
    if (work()) {
      CommitGroupLocked();
    } else {
      return;  // stopping, and everything is committed
    }
  }
}

}  // namespace loadstar::daemon
