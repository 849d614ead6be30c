// LeaseTable expiry arithmetic on TTLs a client chose (AcquireRequest.ttl_seconds).
#include "daemon/lease_table.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace loadstar::daemon {
namespace {

TEST(LeaseTableTest, ExpiryFollowsTtlAndRenewal) {
  LeaseTable t;
  LeaseRecord l = t.Create("d", "i1", 2.5, 1000);
  EXPECT_EQ(l.expires_unix_ms, 3500);
  EXPECT_EQ(t.Renew(l.lease_id, 3000)->expires_unix_ms, 5500);
  EXPECT_EQ(t.Expire(5499).size(), 0u);
  EXPECT_EQ(t.Expire(5500).size(), 1u);
  EXPECT_EQ(t.Renew(l.lease_id, 5600).status().code(), absl::StatusCode::kNotFound);
}

// Fuzzer finding: a TTL of 1e193 s made the int64 conversion undefined.
TEST(LeaseTableTest, ExtremeTtlsSaturate) {
  LeaseTable t;
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(t.Create("d", "i", 1e193, 1000).expires_unix_ms, kMax);
  EXPECT_EQ(t.Create("d", "i", std::numeric_limits<double>::infinity(), 1000).expires_unix_ms,
            kMax);
  EXPECT_EQ(t.Create("d", "i", std::nan(""), 1000).expires_unix_ms, 1000);  // expires at once
  EXPECT_EQ(t.Create("d", "i", -1e300, 1000).expires_unix_ms,
            std::numeric_limits<int64_t>::min());
  LeaseRecord forever = t.Create("d", "i", 1e300, 1000);
  EXPECT_EQ(t.Renew(forever.lease_id, 2000)->expires_unix_ms, kMax);
}

}  // namespace
}  // namespace loadstar::daemon
