// One conformance fixture run against every StateStore implementation.
#include "daemon/state_store.h"

#include <gtest/gtest.h>

#include <functional>

#include "tests/util/test_util.h"

namespace loadstar::daemon {
namespace {

struct StoreFactory {
  std::string name;
  std::function<std::unique_ptr<StateStore>(const std::string& dir)> open;
};

class StateStoreConformanceTest : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override { store_ = GetParam().open(dir_.path()); }
  loadstar::testing::TempDir dir_;
  std::unique_ptr<StateStore> store_;
};

TEST_P(StateStoreConformanceTest, PutLoadDelete) {
  ASSERT_TRUE(store_->PutDeployment({"b", "model: b\n", 2}).ok());
  ASSERT_TRUE(store_->PutDeployment({"a", "model: a\n", 1}).ok());
  ASSERT_TRUE(store_->PutDeployment({"a", "model: a\nnum_gpus: 2\n", 3}).ok());  // replace
  ASSERT_TRUE(store_->PutInstance({"i1", "a", "w1", "ready", 10, "0,1", 100}).ok());
  ASSERT_TRUE(store_->PutInstance({"i2", "b", "w1", "loading", 0, "0", 5}).ok());
  ASSERT_TRUE(store_->PutLease({"l1", "a", "i1", 1000, 30}).ok());
  ASSERT_TRUE(store_->PutLease({"l2", "b", "i2", 2000, 30}).ok());
  std::string info("\x00\x01binary", 8);
  ASSERT_TRUE(store_->PutWorker({"w1", "127.0.0.1:1", info, 5}).ok());

  absl::StatusOr<StateSnapshot> s = store_->Load();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->deployments.size(), 2u);
  EXPECT_EQ(s->deployments[0], (DeploymentRecord{"a", "model: a\nnum_gpus: 2\n", 3}));
  EXPECT_EQ(s->instances[0], (InstanceRecord{"i1", "a", "w1", "ready", 10, "0,1", 100}));
  EXPECT_EQ(s->leases.size(), 2u);
  EXPECT_EQ(s->workers[0].info, info);  // blobs survive byte for byte

  // Deleting an instance drops its leases; deleting a deployment drops everything of it.
  ASSERT_TRUE(store_->DeleteInstance("i1").ok());
  s = store_->Load();
  EXPECT_EQ(s->leases.size(), 1u);
  ASSERT_TRUE(store_->DeleteDeployment("b").ok());
  s = store_->Load();
  EXPECT_EQ(s->deployments.size(), 1u);
  EXPECT_TRUE(s->instances.empty());
  EXPECT_TRUE(s->leases.empty());
  ASSERT_TRUE(store_->DeleteLease("missing").ok());
  ASSERT_TRUE(store_->DeleteWorker("w1").ok());
  EXPECT_TRUE(store_->Load()->workers.empty());
}

INSTANTIATE_TEST_SUITE_P(
    All, StateStoreConformanceTest,
    ::testing::Values(
        StoreFactory{"memory", [](const std::string&) { return NewMemoryStateStore(); }},
        StoreFactory{"sqlite",
                     [](const std::string& dir) {
                       return *OpenSqliteStateStore(dir + "/state.db");
                     }}),
    [](const auto& info) { return info.param.name; });

TEST(SqliteStateStoreTest, SurvivesReopen) {
  loadstar::testing::TempDir dir;
  {
    auto store = OpenSqliteStateStore(dir.Join("s.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->PutDeployment({"a", "model: a\n", 1}).ok());
    ASSERT_TRUE((*store)->PutLease({"l", "a", "i", 9, 1}).ok());
  }
  auto store = OpenStateStore("sqlite:" + dir.Join("s.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  auto s = (*store)->Load();
  ASSERT_EQ(s->deployments.size(), 1u);
  ASSERT_EQ(s->leases.size(), 1u);
  EXPECT_FALSE(OpenStateStore("etcd://x").ok());
  EXPECT_EQ(OpenSqliteStateStore("/nonexistent/dir/s.db").status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace loadstar::daemon
