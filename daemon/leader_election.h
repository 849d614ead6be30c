// Leader election among controllers sharing an etcd (SPEC §7 High availability), the
// recipe of a lease plus a create-revision compare:
//   - each candidate holds an etcd lease of `ttl_seconds` and, in one transaction, creates
//     PREFIX/leader (value: its advertised address, attached to its lease) only if the key
//     does not exist; whoever created it leads, identified by the key's create revision;
//   - the leader keeps its lease alive every ttl/3; when the leader dies or is partitioned
//     its lease expires, etcd deletes the key, and the next candidate's transaction wins;
//   - the leader steps down on its own once it has not refreshed its lease for a TTL, and
//     every state write it makes is fenced on the key's create revision
//     (EtcdStateStore::SetFence), so a deposed leader that has not noticed yet cannot
//     write: etcd refuses the transaction.
// Followers poll the key (every `poll_interval`) to learn the leader's address, which the
// controller's followers name in their UNAVAILABLE answers.
//
// Thread safety: Start/Stop from one thread; callbacks run on the election thread, never
// concurrently; leader() and is_leader() from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/etcd_client.h"

namespace loadstar::daemon {

class LeaderElection {
 public:
  struct Options {
    EtcdClient* etcd = nullptr;
    std::string key;       // PREFIX/leader
    std::string identity;  // this controller's advertised address
    int64_t ttl_seconds = 5;
    std::chrono::milliseconds poll_interval{200};
    // Called when this controller becomes leader, with the key's create revision (the
    // fence), and when it stops being leader. `on_elected` returning an error (the state
    // could not be loaded, say) gives the leadership up again.
    std::function<absl::Status(int64_t create_revision)> on_elected;
    std::function<void()> on_deposed;
  };

  explicit LeaderElection(Options options);
  ~LeaderElection();  // Stop()

  void Start();
  // Stops campaigning; a leader steps down (on_deposed) and revokes its lease, so a
  // follower takes over at once instead of after the TTL.
  void Stop();

  bool is_leader() const;
  // The current leader's address ("" while none is known).
  std::string leader() const;

 private:
  void Loop();
  // One attempt: true when this controller now leads.
  bool Campaign(int64_t lease, int64_t* create_revision);

  const Options options_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool leader_ ABSL_GUARDED_BY(mu_) = false;
  std::string leader_address_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace loadstar::daemon
