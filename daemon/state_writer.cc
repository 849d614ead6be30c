#include "daemon/state_writer.h"

#include <utility>
#include <vector>

#include "spdlog/spdlog.h"

namespace loadstar::daemon {

absl::Status StateWriter::Pending::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done_));
  return status_;
}

void StateWriter::Pending::Finish(absl::Status status) {
  absl::MutexLock lock(&mu_);
  status_ = std::move(status);
  done_ = true;
}

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
  auto pending = std::make_shared<Pending>();
  absl::MutexLock lock(&mu_);
  queue_.push_back({std::move(batch), pending, {}});
  return pending;
}

void StateWriter::SubmitLogged(StateBatch batch, std::string what) {
  absl::MutexLock lock(&mu_);
  queue_.push_back({std::move(batch), nullptr, std::move(what)});
}

StateWriter::Stats StateWriter::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void StateWriter::Loop() {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
  while (true) {
    std::vector<Queued> group;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, and everything is committed
      while (!queue_.empty() && group.size() < max_group_) {
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    std::vector<StateBatch> batches;
    batches.reserve(group.size());
    for (Queued& q : group) batches.push_back(std::move(q.batch));
    std::vector<absl::Status> results = store_->Commit(batches);
    uint64_t failed = 0;
    for (size_t i = 0; i < group.size(); ++i) {
      failed += !results[i].ok();
      if (group[i].pending != nullptr) {
        group[i].pending->Finish(results[i]);
      } else if (!results[i].ok()) {
        spdlog::error("state store: writing {}: {}", group[i].what,
                      std::string(results[i].message()));
      }
    }
    absl::MutexLock lock(&mu_);
    ++stats_.commits;
    stats_.batches += group.size();
    stats_.failed += failed;
  }
}

}  // namespace loadstar::daemon
