#include "daemon/worker_registry.h"

namespace loadstar::daemon {

bool WorkerRegistry::Upsert(const loadstar::v1::WorkerInfo& info, int64_t now_ms) {
  auto [it, inserted] = workers_.try_emplace(info.worker_id());
  bool revived = inserted || it->second.lost;
  it->second.info = info;
  it->second.last_heartbeat_ms = now_ms;
  it->second.lost = false;
  it->second.suspect = false;
  return revived;
}

std::vector<std::string> WorkerRegistry::ExpireLost(int64_t now_ms) {
  std::vector<std::string> lost;
  for (auto& [id, entry] : workers_) {
    if (!entry.lost && now_ms - entry.last_heartbeat_ms > timeout_ms_) {
      entry.lost = true;
      lost.push_back(id);
    }
  }
  return lost;
}

void WorkerRegistry::MarkSuspect(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  if (it != workers_.end()) it->second.suspect = true;
}

const WorkerRegistry::Entry* WorkerRegistry::Find(const std::string& worker_id) const {
  auto it = workers_.find(worker_id);
  return it == workers_.end() ? nullptr : &it->second;
}

std::vector<loadstar::v1::WorkerStatus> WorkerRegistry::List() const {
  std::vector<loadstar::v1::WorkerStatus> out;
  for (const auto& [id, entry] : workers_) {
    loadstar::v1::WorkerStatus& s = out.emplace_back();
    *s.mutable_info() = entry.info;
    s.set_state(entry.lost ? "lost" : "alive");
    s.set_last_heartbeat_unix_ms(entry.last_heartbeat_ms);
  }
  return out;
}

}  // namespace loadstar::daemon
