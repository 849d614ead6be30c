// LeaseTable expiry arithmetic on TTLs a client chose (AcquireRequest.ttl_seconds).
#include "daemon/lease_table.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace loadstar::daemon {
namespace {

// Fuzzer finding: a TTL of 1e193 s made the int64 conversion undefined.
TEST(LeaseTableTest, ExtremeTtlsSaturate) {
  LeaseTable t;
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(LeaseTable::Make("d", "i", 1e193, 1000).expires_unix_ms, kMax);
  EXPECT_EQ(LeaseTable::Make("d", "i", std::numeric_limits<double>::infinity(), 1000)
                .expires_unix_ms,
            kMax);
  EXPECT_EQ(LeaseTable::Make("d", "i", std::nan(""), 1000).expires_unix_ms, 1000);  // at once
  EXPECT_EQ(LeaseTable::Make("d", "i", -1e300, 1000).expires_unix_ms,
            std::numeric_limits<int64_t>::min());
  LeaseRecord forever = LeaseTable::Make("d", "i", 1e300, 1000);
  t.Put(forever);
  EXPECT_EQ(t.Renewed(forever.lease_id, 2000)->expires_unix_ms, kMax);
}

}  // namespace
}  // namespace loadstar::daemon
