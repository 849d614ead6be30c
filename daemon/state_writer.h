// StateWriter: the controller's one path to its StateStore, and what keeps state I/O off
// the controller's mutex.
//
// The controller queues a batch while it holds its mutex (Submit only appends to a queue:
// no I/O, no waiting), so the store applies changes in the order the controller decided
// them. It then releases the mutex and waits for the batch, if the caller must answer
// only once the change is durable (Pending::Wait). Whoever commits takes everything that
// queued up since the last commit into one StateStore::Commit: many concurrent Acquires'
// lease writes share one SQLite transaction (group commit), so the store keeps up with
// many clients at the cost of one commit each round.
//
// Who commits (LevelDB's writer queue): a waiter finding no commit running commits the
// queue itself, so a lone Acquire pays no thread hand-off; the others wait for it and the
// next one leads the next round. Batches no caller waits on (SubmitLogged) are committed
// by the next waiter or, when none comes, by the writer's own thread.
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
    explicit Pending(StateWriter* writer) : writer_(writer) {}
    // Blocks until the batch is committed (OK: durable) or has failed; may run the
    // commit on the calling thread.
    absl::Status Wait() { return writer_->Wait(*this); }

   private:
    friend class StateWriter;
    StateWriter* const writer_;
    bool done = false;     // guarded by writer_->mu_
    absl::Status status;  // guarded by writer_->mu_
  };

  struct Stats {
    uint64_t commits = 0;  // StateStore::Commit calls
    uint64_t batches = 0;  // batches they carried
    uint64_t failed = 0;   // batches that failed
    double commit_seconds = 0;  // wall time inside StateStore::Commit
    size_t queued = 0;          // batches waiting for a commit now
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
  absl::Status Wait(Pending& pending);
  // Commits the front of the queue with mu_ released meanwhile. REQUIRES: no commit running.
  void CommitGroupLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();

  StateStore* const store_;
  const size_t max_group_;
  mutable absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  bool committing_ ABSL_GUARDED_BY(mu_) = false;
  size_t logged_queued_ ABSL_GUARDED_BY(mu_) = 0;  // SubmitLogged batches in queue_
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  Stats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace loadstar::daemon
