// LeaseTable: leases handed out by Acquire. A lease pins an instance (it is not scaled
// down while leased) until released or until its TTL passes without a renewal.
//
// Thread-compatible: the controller calls it under its own mutex.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/state_store.h"

namespace loadstar::daemon {

class LeaseTable {
 public:
  LeaseRecord Create(const std::string& deployment, const std::string& instance_id,
                     double ttl_seconds, int64_t now_ms);
  void Restore(const LeaseRecord& lease) { leases_[lease.lease_id] = lease; }
  // NOT_FOUND if unknown or already expired (an expired lease cannot be revived: its
  // instance may be gone).
  absl::StatusOr<LeaseRecord> Renew(const std::string& lease_id, int64_t now_ms);
  absl::StatusOr<LeaseRecord> Release(const std::string& lease_id);
  // Removes and returns the leases whose expiry is <= now.
  std::vector<LeaseRecord> Expire(int64_t now_ms);
  // Removes and returns the leases on `instance_id`.
  std::vector<LeaseRecord> RemoveInstance(const std::string& instance_id);
  uint32_t CountOn(const std::string& instance_id) const;
  const std::map<std::string, LeaseRecord>& leases() const { return leases_; }

 private:
  std::map<std::string, LeaseRecord> leases_;
};

// 128 random bits as 32 hex characters, with `prefix`.
std::string RandomId(const std::string& prefix);

}  // namespace loadstar::daemon
