// LeaseTable: leases handed out by Acquire. A lease pins an instance (it is not scaled
// down while leased) until released or until its TTL passes without a renewal.
//
// The table holds only leases whose record is durable: the controller builds a lease with
// Make or Renewed, writes it, and only then adds it with Put.
//
// Thread-compatible: the controller calls it under its own mutex.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/state_store.h"

namespace loadstar::daemon {

class LeaseTable {
 public:
  // A new lease (a fresh random id); not in the table until Put.
  static LeaseRecord Make(const std::string& deployment, const std::string& instance_id,
                          double ttl_seconds, int64_t now_ms);
  // Adds or replaces (a new, renewed or recovered lease).
  void Put(const LeaseRecord& lease) { leases_[lease.lease_id] = lease; }
  const LeaseRecord* Find(const std::string& lease_id) const;
  // The lease as a renewal at `now_ms` would make it; the table is unchanged. NOT_FOUND if
  // unknown or already expired (an expired lease cannot be revived: its instance may be
  // gone).
  absl::StatusOr<LeaseRecord> Renewed(const std::string& lease_id, int64_t now_ms) const;
  absl::StatusOr<LeaseRecord> Release(const std::string& lease_id);
  // Removes and returns the leases whose expiry is <= now, except those in `keep` (a
  // renewal or release of theirs is being written).
  std::vector<LeaseRecord> Expire(int64_t now_ms, const std::set<std::string>& keep = {});
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
