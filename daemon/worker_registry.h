// WorkerRegistry: the workers a controller knows, from registrations and heartbeats.
// A worker whose last heartbeat is older than the timeout (default 3 x 1 s) is lost;
// ExpireLost reports it once so the controller reschedules its instances.
//
// Thread-compatible: the controller calls it under its own mutex.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "daemon/scheduler_policy.h"
#include "loadstar/v1/controller.pb.h"

namespace loadstar::daemon {

class WorkerRegistry {
 public:
  struct Entry {
    loadstar::v1::WorkerInfo info;
    int64_t last_heartbeat_ms = 0;
    bool lost = false;
    // A call to it failed as unreachable; not placed on until its next heartbeat.
    bool suspect = false;
  };

  explicit WorkerRegistry(int64_t timeout_ms) : timeout_ms_(timeout_ms) {}

  // Registration and heartbeat: replaces the worker's info, marks it alive.
  // Returns true if the worker was unknown or lost before.
  bool Upsert(const loadstar::v1::WorkerInfo& info, int64_t now_ms);
  // Workers that just became lost.
  std::vector<std::string> ExpireLost(int64_t now_ms);
  void MarkSuspect(const std::string& worker_id);
  const Entry* Find(const std::string& worker_id) const;
  const std::map<std::string, Entry>& entries() const { return workers_; }
  std::vector<loadstar::v1::WorkerStatus> List() const;

 private:
  const int64_t timeout_ms_;
  std::map<std::string, Entry> workers_;
};

}  // namespace loadstar::daemon
