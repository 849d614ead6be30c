#include "daemon/lease_table.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

#include "absl/random/random.h"

namespace loadstar::daemon {

std::string RandomId(const std::string& prefix) {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  absl::MutexLock lock(&mu);
  return fmt::format("{}{:016x}{:016x}", prefix, absl::Uniform<uint64_t>(*gen),
                     absl::Uniform<uint64_t>(*gen));
}

namespace {

// now + ttl, saturating: a TTL comes from the client (AcquireRequest.ttl_seconds), and
// converting 1e193 s to int64 ms was undefined (found by controller_rpc_fuzzer). NaN
// expires at once; an expiry past int64 never comes.
int64_t ExpiryMs(int64_t now_ms, double ttl_seconds) {
  if (std::isnan(ttl_seconds)) return now_ms;
  const double expiry = static_cast<double>(now_ms) + ttl_seconds * 1000;
  if (expiry >= 9.2e18) return std::numeric_limits<int64_t>::max();
  if (expiry <= -9.2e18) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(expiry);
}

}  // namespace

LeaseRecord LeaseTable::Make(const std::string& deployment, const std::string& instance_id,
                             double ttl_seconds, int64_t now_ms) {
  return LeaseRecord{RandomId("lease-"), deployment, instance_id, ExpiryMs(now_ms, ttl_seconds),
                     ttl_seconds};
}

const LeaseRecord* LeaseTable::Find(const std::string& lease_id) const {
  auto it = leases_.find(lease_id);
  return it == leases_.end() ? nullptr : &it->second;
}

absl::StatusOr<LeaseRecord> LeaseTable::Renewed(const std::string& lease_id,
                                                int64_t now_ms) const {
  auto it = leases_.find(lease_id);
  if (it == leases_.end() || it->second.expires_unix_ms <= now_ms) {
    return absl::NotFoundError(fmt::format("lease {} is unknown or expired", lease_id));
  }
  LeaseRecord lease = it->second;
  lease.expires_unix_ms = ExpiryMs(now_ms, lease.ttl_seconds);
  return lease;
}

absl::StatusOr<LeaseRecord> LeaseTable::Release(const std::string& lease_id) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(fmt::format("lease {} is unknown or expired", lease_id));
  }
  LeaseRecord lease = it->second;
  leases_.erase(it);
  return lease;
}

std::vector<LeaseRecord> LeaseTable::Expire(int64_t now_ms, const std::set<std::string>& keep) {
  std::vector<LeaseRecord> out;
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.expires_unix_ms <= now_ms && !keep.contains(it->first)) {
      out.push_back(it->second);
      it = leases_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<LeaseRecord> LeaseTable::RemoveInstance(const std::string& instance_id) {
  std::vector<LeaseRecord> out;
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.instance_id == instance_id) {
      out.push_back(it->second);
      it = leases_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

uint32_t LeaseTable::CountOn(const std::string& instance_id) const {
  uint32_t n = 0;
  for (const auto& [id, lease] : leases_) n += lease.instance_id == instance_id;
  return n;
}

}  // namespace loadstar::daemon
