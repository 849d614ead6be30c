// StateWriter: the controller's one path to its StateStore, and what keeps state I/O off
// the controller's mutex.
//
// The controller queues a batch while it holds its mutex (Submit only appends to a queue:
// no I/O, no waiting), so the store applies changes in the order the controller decided
// them. It then releases the mutex and waits for the batch, if the caller must answer
// only once the change is durable (Pending::Wait). One thread commits everything that
// queued up since its last commit as one StateStore::Commit: many concurrent Acquires'
// lease writes share one SQLite transaction (group commit), so the store keeps up with
// many clients at the cost of one commit each round.
//
// Thread safety: thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "daemon/state_store.h"

namespace loadstar::daemon {

class StateWriter {
 public:
  // The outcome of one submitted batch.
  class Pending {
   public:
    // Blocks until the batch is committed (OK: durable) or has failed.
    absl::Status Wait();

   private:
    friend class StateWriter;
    void Finish(absl::Status status);
    absl::Mutex mu_;
    bool done_ ABSL_GUARDED_BY(mu_) = false;
    absl::Status status_ ABSL_GUARDED_BY(mu_);
  };

  struct Stats {
    uint64_t commits = 0;  // StateStore::Commit calls
    uint64_t batches = 0;  // batches they carried
    uint64_t failed = 0;   // batches that failed
  };

  // `store` must outlive the writer. At most `max_group` batches go into one commit.
  explicit StateWriter(StateStore* store, size_t max_group = 512);
  // Commits what is still queued, then stops.
  ~StateWriter();
  StateWriter(const StateWriter&) = delete;
  StateWriter& operator=(const StateWriter&) = delete;

  // Queues `batch` behind everything submitted before it.
  std::shared_ptr<Pending> Submit(StateBatch batch);
  // For a change no caller waits on (background reconciliation): a failure is logged,
  // naming `what`; the record is written again by its next change, and a restart
  // reconciles the rest with the workers.
  void SubmitLogged(StateBatch batch, std::string what);

  Stats stats() const;

 private:
  struct Queued {
    StateBatch batch;
    std::shared_ptr<Pending> pending;  // null for SubmitLogged
    std::string what;
  };
  void Loop();

  StateStore* const store_;
  const size_t max_group_;
  mutable absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  Stats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace loadstar::daemon
