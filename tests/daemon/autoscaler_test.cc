#include "daemon/autoscaler.h"

#include <gtest/gtest.h>

#include "daemon/lease_table.h"

namespace loadstar::daemon {
namespace {

AutoScalingConfig Config(uint32_t min, uint32_t max, double target, double keep_alive) {
  AutoScalingConfig c;
  c.min_instances = min;
  c.max_instances = max;
  c.target = target;
  c.keep_alive = keep_alive;
  return c;
}

TEST(AutoscalerTest, DesiredIsClampedCeilOfDemandOverTarget) {
  EXPECT_EQ(DesiredInstances(Config(0, 4, 2, 60), 0), 0u);
  EXPECT_EQ(DesiredInstances(Config(0, 4, 2, 60), 1), 1u);
  EXPECT_EQ(DesiredInstances(Config(0, 4, 2, 60), 5), 3u);
  EXPECT_EQ(DesiredInstances(Config(0, 4, 2, 60), 100), 4u);
  EXPECT_EQ(DesiredInstances(Config(2, 4, 2, 60), 0), 2u);
}

TEST(AutoscalerTest, ColdStartFromZeroOnAWaitingAcquire) {
  ScalingDecision d = DecideScaling(Config(0, 2, 1, 60), {}, /*waiting=*/1, 0);
  EXPECT_EQ(d.start, 1u);
  EXPECT_TRUE(d.stop.empty());
}

TEST(AutoscalerTest, ScalesDownOneIdleInstanceAfterKeepAlive) {
  AutoScalingConfig c = Config(0, 4, 1, 10);
  std::vector<InstanceLoad> instances = {{"a", true, 0, 1000}, {"b", true, 0, 500},
                                         {"c", true, 1, 0}};
  // Idle for 9.6 s and 9.1 s: not yet.
  EXPECT_TRUE(DecideScaling(c, instances, 0, 10'100).stop.empty());
  // b has been idle longest and past keep_alive: it goes first, one per decision.
  ScalingDecision d = DecideScaling(c, instances, 0, 10'600);
  EXPECT_EQ(d.stop, "b");
  EXPECT_EQ(d.desired, 1u);
  // A leased or still-loading instance is never stopped.
  instances = {{"leased", true, 1, 0}, {"loading", false, 0, 0}};
  EXPECT_TRUE(DecideScaling(Config(0, 4, 5, 0), instances, 0, 1'000'000).stop.empty());
  // min_instances keeps one.
  EXPECT_TRUE(DecideScaling(Config(1, 4, 1, 0), {{"a", true, 0, 0}}, 0, 1'000'000).stop.empty());
}

TEST(LeaseTableTest, MakePutRenewReleaseExpire) {
  LeaseTable t;
  LeaseRecord a = LeaseTable::Make("d", "i1", 10, 1000);
  LeaseRecord b = LeaseTable::Make("d", "i2", 1, 1000);
  EXPECT_NE(a.lease_id, b.lease_id);
  EXPECT_EQ(a.expires_unix_ms, 11'000);
  EXPECT_EQ(t.CountOn("i1"), 0u);  // made, not yet added
  t.Put(a);
  t.Put(b);
  EXPECT_EQ(t.CountOn("i1"), 1u);
  auto renewed = t.Renewed(a.lease_id, 5000);
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(renewed->expires_unix_ms, 15'000);
  EXPECT_EQ(t.Find(a.lease_id)->expires_unix_ms, 11'000);  // Renewed changes nothing
  t.Put(*renewed);
  EXPECT_EQ(t.Find(a.lease_id)->expires_unix_ms, 15'000);
  // A lease being written is not expired under its writer.
  EXPECT_TRUE(t.Expire(2000, {b.lease_id}).empty());
  std::vector<LeaseRecord> expired = t.Expire(2000);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].lease_id, b.lease_id);
  EXPECT_EQ(t.Renewed(b.lease_id, 2000).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(t.Release(a.lease_id).ok());
  EXPECT_EQ(t.Release(a.lease_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.Find(a.lease_id), nullptr);
}

}  // namespace
}  // namespace loadstar::daemon
