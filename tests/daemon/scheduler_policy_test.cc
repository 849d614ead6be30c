#include "daemon/scheduler_policy.h"

#include <gtest/gtest.h>

namespace loadstar::daemon {
namespace {

constexpr uint64_t GiB = 1ull << 30;

WorkerSnapshot Worker(const std::string& id, int devices, uint64_t device_bytes) {
  WorkerSnapshot w;
  w.worker_id = id;
  for (int i = 0; i < devices; ++i) w.devices.push_back({device_bytes, device_bytes});
  w.disk_bandwidth = 1e9;
  w.copy_bandwidth = 10e9;
  w.models_on_disk.insert("m");
  return w;
}

PlacementRequest Request(uint64_t bytes, uint32_t gpus = 1) {
  PlacementRequest r;
  r.deployment = "m";
  r.model = "m";
  r.checkpoint_bytes = bytes;
  r.loaded_bytes = bytes;
  r.num_gpus = gpus;
  return r;
}

TEST(LoadTimePolicyTest, PicksTheWorkerWithTheModelInHostCache) {
  ClusterSnapshot c;
  c.workers = {Worker("a", 2, 10 * GiB), Worker("b", 2, 10 * GiB)};
  c.workers[1].models_in_host_cache.insert("m");
  Placement p = LoadTimePolicy().Place(c, Request(4 * GiB));
  ASSERT_EQ(p.kind, Placement::Kind::kPlaced);
  EXPECT_EQ(p.worker_id, "b");
  EXPECT_NEAR(p.estimated_seconds, 4 * GiB / 10e9, 1e-6);
}

TEST(LoadTimePolicyTest, ResidentReplicaBeatsHostCacheBeatsDisk) {
  ClusterSnapshot c;
  c.workers = {Worker("disk", 1, 10 * GiB), Worker("cache", 1, 10 * GiB),
               Worker("resident", 2, 10 * GiB)};
  c.workers[1].models_in_host_cache.insert("m");
  c.workers[2].resident.insert("m");
  EXPECT_EQ(LoadTimePolicy().Place(c, Request(GiB)).worker_id, "resident");
}

// Warm scale-out: both workers already hold one replica (so anti-affinity ties); the one
// whose replica is ready copies it device-to-device at the bandwidth its communicator
// measured. That bandwidth, not a constant, prices the tier: a slow one loses to the
// host cache, and a worker without a communicator (0) has no such tier at all.
TEST(LoadTimePolicyTest, WarmScaleOutPicksTheResidentReplicaAtItsMeasuredBandwidth) {
  ClusterSnapshot c;
  c.workers = {Worker("cache", 1, 10 * GiB), Worker("resident", 1, 10 * GiB)};
  c.workers[0].models_in_host_cache.insert("m");  // 4 GiB / 10e9 = 0.43 s
  c.workers[0].replicas["m"] = 1;                 // its replica is still loading
  c.workers[1].resident.insert("m");
  c.workers[1].replicas["m"] = 1;
  c.workers[1].device_copy_bandwidth = 50e9;      // 0.086 s
  Placement p = LoadTimePolicy().Place(c, Request(4 * GiB));
  ASSERT_EQ(p.kind, Placement::Kind::kPlaced);
  EXPECT_EQ(p.worker_id, "resident");
  EXPECT_NEAR(p.estimated_seconds, 4 * GiB / 50e9, 1e-6);

  c.workers[1].device_copy_bandwidth = 2e9;  // slower than the other's host cache
  EXPECT_EQ(LoadTimePolicy().Place(c, Request(4 * GiB)).worker_id, "cache");
  c.workers[1].device_copy_bandwidth = 0;    // no communicator: its disk, 4.3 s
  EXPECT_NEAR(LoadTimePolicy::EstimateSeconds(c.workers[1], Request(4 * GiB)),
              4 * GiB / 1e9, 1e-6);
}

TEST(LoadTimePolicyTest, QueueWaitAndSkipsWorkersWithoutTheModel) {
  ClusterSnapshot c;
  c.workers = {Worker("busy", 1, 10 * GiB), Worker("idle", 1, 10 * GiB),
               Worker("empty", 1, 10 * GiB)};
  c.workers[0].queue_wait_seconds = 5;
  c.workers[2].models_on_disk.clear();
  c.workers[2].disk_bandwidth = 1e12;
  EXPECT_EQ(LoadTimePolicy().Place(c, Request(GiB)).worker_id, "idle");
}

// The case a user met: two workers reading the same store, one probed faster; every
// replica went to the faster one.
TEST(LoadTimePolicyTest, ReplicasSpreadOverWorkersBeforeTheFasterOneTakesTwo) {
  ClusterSnapshot c;
  c.workers = {Worker("fast", 2, 10 * GiB), Worker("slow", 2, 10 * GiB)};
  c.workers[0].disk_bandwidth = 1.26e9;
  c.workers[1].disk_bandwidth = 0.57e9;
  EXPECT_EQ(LoadTimePolicy().Place(c, Request(GiB)).worker_id, "fast");
  c.workers[0].replicas["m"] = 1;
  EXPECT_EQ(LoadTimePolicy().Place(c, Request(GiB)).worker_id, "slow");
  c.workers[1].replicas["m"] = 1;
  EXPECT_EQ(LoadTimePolicy().Place(c, Request(GiB)).worker_id, "fast");  // equal: time decides
  // Replicas of another deployment do not count.
  c.workers[0].replicas["m"] = 0;
  c.workers[0].replicas["other"] = 5;
  EXPECT_EQ(LoadTimePolicy().Place(c, Request(GiB)).worker_id, "fast");
}

TEST(LoadTimePolicyTest, SpreadRequiredNeverStacksReplicas) {
  ClusterSnapshot c;
  c.workers = {Worker("a", 2, 10 * GiB), Worker("b", 2, 10 * GiB)};
  c.workers[0].replicas["m"] = 1;
  PlacementRequest r = Request(GiB);
  r.spread_required = true;
  EXPECT_EQ(LoadTimePolicy().Place(c, r).worker_id, "b");
  c.workers[1].replicas["m"] = 1;
  Placement p = LoadTimePolicy().Place(c, r);
  EXPECT_EQ(p.kind, Placement::Kind::kRetryLater);
  EXPECT_NE(std::string(p.reason.message()).find("spread: required"), std::string::npos);
  r.spread_required = false;  // preferred: a second replica may share a worker
  EXPECT_EQ(LoadTimePolicy().Place(c, r).kind, Placement::Kind::kPlaced);
}

TEST(LoadTimePolicyTest, LocalDiskLimitsWhichStoresAreRead) {
  ClusterSnapshot c;
  c.workers = {Worker("a", 1, 10 * GiB), Worker("b", 1, 10 * GiB), Worker("c", 1, 10 * GiB)};
  c.workers[0].disk_bandwidth = 10e9;  // fastest, but not listed
  c.workers[2].models_in_host_cache.insert("m");
  PlacementRequest r = Request(GiB);
  r.local_disk = {"b"};
  EXPECT_EQ(LoadTimePolicy().Place(c, r).worker_id, "c");  // host cache still counts
  c.workers[2].models_in_host_cache.clear();
  EXPECT_EQ(LoadTimePolicy().Place(c, r).worker_id, "b");
  r.local_disk = {"nowhere"};
  Placement p = LoadTimePolicy().Place(c, r);
  EXPECT_EQ(p.kind, Placement::Kind::kInfeasible);
  EXPECT_NE(std::string(p.reason.message()).find("local_disk"), std::string::npos);
}

TEST(LoadTimePolicyTest, RespectsDeviceMemory) {
  ClusterSnapshot c;
  c.workers = {Worker("small", 4, 2 * GiB), Worker("big", 2, 8 * GiB)};
  c.workers[0].models_in_host_cache.insert("m");  // faster, but does not fit
  Placement p = LoadTimePolicy().Place(c, Request(6 * GiB));
  ASSERT_EQ(p.kind, Placement::Kind::kPlaced);
  EXPECT_EQ(p.worker_id, "big");
  // Split over 4 devices it fits on "small" (1.5 GiB each), which is faster.
  p = LoadTimePolicy().Place(c, Request(6 * GiB, 4));
  ASSERT_EQ(p.kind, Placement::Kind::kPlaced);
  EXPECT_EQ(p.worker_id, "small");
  EXPECT_EQ(p.devices.size(), 4u);
}

TEST(LoadTimePolicyTest, PicksTheEmptiestDevices) {
  ClusterSnapshot c;
  c.workers = {Worker("a", 3, 10 * GiB)};
  c.workers[0].devices[0].free_bytes = 1 * GiB;
  Placement p = LoadTimePolicy().Place(c, Request(2 * GiB, 2));
  ASSERT_EQ(p.kind, Placement::Kind::kPlaced);
  EXPECT_EQ(p.devices, (std::vector<uint32_t>{1, 2}));
}

TEST(LoadTimePolicyTest, RetryLaterWhenBusyInfeasibleWhenNever) {
  ClusterSnapshot c;
  c.workers = {Worker("a", 1, 8 * GiB)};
  c.workers[0].devices[0].free_bytes = GiB;
  Placement busy = LoadTimePolicy().Place(c, Request(4 * GiB));
  EXPECT_EQ(busy.kind, Placement::Kind::kRetryLater);
  Placement too_big = LoadTimePolicy().Place(c, Request(16 * GiB));
  EXPECT_EQ(too_big.kind, Placement::Kind::kInfeasible);
  EXPECT_EQ(too_big.reason.code(), absl::StatusCode::kResourceExhausted);
  Placement too_many = LoadTimePolicy().Place(c, Request(GiB, 2));
  EXPECT_EQ(too_many.kind, Placement::Kind::kInfeasible);
  PlacementRequest pinned = Request(GiB);
  pinned.allowed_workers = {"elsewhere"};
  EXPECT_EQ(LoadTimePolicy().Place(c, pinned).reason.code(),
            absl::StatusCode::kFailedPrecondition);
  PlacementRequest unknown = Request(GiB);
  unknown.model = "other";
  EXPECT_EQ(LoadTimePolicy().Place(c, unknown).reason.code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(LoadTimePolicy().Place(ClusterSnapshot{}, Request(GiB)).reason.code(),
            absl::StatusCode::kUnavailable);
}

TEST(LoadTimePolicyTest, StoredQuantizedArtifactSkipsQuantization) {
  ClusterSnapshot c;
  c.workers = {Worker("plain", 1, 10 * GiB), Worker("artifact", 1, 10 * GiB)};
  c.workers[1].variants_on_disk.insert("m@nf4-bs64");
  PlacementRequest r = Request(4 * GiB);
  r.variant = "nf4-bs64";
  r.loaded_bytes = EstimateLoadedBytes(r.checkpoint_bytes, "nf4", 64);
  EXPECT_LT(r.loaded_bytes, r.checkpoint_bytes / 3);
  EXPECT_EQ(LoadTimePolicy().Place(c, r).worker_id, "artifact");
}

}  // namespace
}  // namespace loadstar::daemon
