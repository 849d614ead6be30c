// One conformance fixture run against every StateStore implementation.
#include "daemon/state_store.h"

#include <gtest/gtest.h>

#include <sqlite3.h>

#include <functional>

#include "absl/strings/str_cat.h"
#include "daemon/etcd_state_store.h"
#include "tests/util/etcd_server.h"
#include "tests/util/test_util.h"

namespace loadstar::daemon {
namespace {

struct StoreFactory {
  std::string name;
  // Null with `*skip` set when the store's server is not available here.
  std::function<std::unique_ptr<StateStore>(const std::string& dir, std::string* skip)> open;
};

// A real etcd (started once per test process); each test gets its own key prefix.
std::unique_ptr<StateStore> OpenEtcd(const std::string&, std::string* skip) {
  loadstar::testing::EtcdServer* etcd = loadstar::testing::EtcdServer::Shared();
  if (!etcd->ok()) {
    *skip = etcd->error();
    return nullptr;
  }
  static int n = 0;
  auto store = OpenStateStore(
      absl::StrCat("etcd://", etcd->endpoint(), "/conformance-", ::getpid(), "-", ++n));
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

class StateStoreConformanceTest : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override {
    std::string skip;
    store_ = GetParam().open(dir_.path(), &skip);
    if (store_ == nullptr && !skip.empty()) GTEST_SKIP() << skip;
    ASSERT_NE(store_, nullptr);
  }
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

// Several batches in one Commit (the group commit): applied in order, each atomically.
TEST_P(StateStoreConformanceTest, CommitAppliesBatchesInOrderEachAtomically) {
  std::vector<StateBatch> batches = {
      {DeploymentRecord{"a", "model: a\n", 1}, InstanceRecord{"i1", "a", "w1", "ready", 0, "0", 1},
       LeaseRecord{"l1", "a", "i1", 5, 1}},
      {LeaseRecord{"l2", "a", "i1", 5, 1}, LeaseDeletion{"l1"}},
      {LeaseRecord{"l1", "a", "i1", 7, 1}},  // put back, after its deletion
      {WorkerRecord{"w1", "addr", "info", 3}},
  };
  std::vector<absl::Status> results = store_->Commit(batches);
  ASSERT_EQ(results.size(), batches.size());
  for (const absl::Status& r : results) EXPECT_TRUE(r.ok()) << r;
  auto s = store_->Load();
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->leases.size(), 2u);
  EXPECT_EQ(s->leases[0], (LeaseRecord{"l1", "a", "i1", 7, 1}));
  EXPECT_EQ(s->workers.size(), 1u);
  ASSERT_TRUE(store_->Commit({{DeploymentDeletion{"a"}}})[0].ok());
  s = store_->Load();
  EXPECT_TRUE(s->deployments.empty() && s->instances.empty() && s->leases.empty());
  EXPECT_TRUE(store_->Commit({}).empty());
}

// A failed deployment's state round-trips, and putting it back active clears it.
TEST_P(StateStoreConformanceTest, FailedStateRoundTrips) {
  const DeploymentRecord failed{"a", "model: a\n", 1, "failed: 5 consecutive loads failed",
                                static_cast<int32_t>(absl::StatusCode::kDataLoss),
                                "checksum mismatch in chunk 3"};
  ASSERT_TRUE(store_->PutDeployment(failed).ok());
  auto s = store_->Load();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->deployments.size(), 1u);
  EXPECT_EQ(s->deployments[0], failed);
  ASSERT_TRUE(store_->PutDeployment({"a", "model: a\n", 1}).ok());
  EXPECT_EQ(store_->Load()->deployments[0], (DeploymentRecord{"a", "model: a\n", 1}));
}

INSTANTIATE_TEST_SUITE_P(
    All, StateStoreConformanceTest,
    ::testing::Values(
        StoreFactory{"memory",
                     [](const std::string&, std::string*) { return NewMemoryStateStore(); }},
        StoreFactory{"sqlite",
                     [](const std::string& dir, std::string*) {
                       return *OpenSqliteStateStore(dir + "/state.db");
                     }},
        StoreFactory{"etcd", OpenEtcd}),
    [](const auto& info) { return info.param.name; });

// A database written before the failed state was persisted (deployments with three
// columns) opens, keeps its rows as active deployments and stores failed ones.
TEST(SqliteStateStoreTest, MigratesADeploymentsTableWithoutTheFailedState) {
  loadstar::testing::TempDir dir;
  const std::string path = dir.Join("old.db");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TABLE deployments(name TEXT PRIMARY KEY, config_yaml TEXT NOT "
                           "NULL, created_unix_ms INTEGER NOT NULL);"
                           // As this store writes text: bound as blobs.
                           "INSERT INTO deployments VALUES(CAST('old' AS BLOB), "
                           "CAST('model: old\n' AS BLOB), 7);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = OpenSqliteStateStore(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto s = (*store)->Load();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->deployments.size(), 1u);
  EXPECT_EQ(s->deployments[0], (DeploymentRecord{"old", "model: old\n", 7}));
  const DeploymentRecord failed{"old", "model: old\n", 7, "failed", 5, "gone"};
  ASSERT_TRUE((*store)->PutDeployment(failed).ok());
  auto after = (*store)->Load();
  ASSERT_EQ(after->deployments.size(), 1u);  // replaced, not a second row
  EXPECT_EQ(after->deployments[0], failed);
}

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
  EXPECT_EQ(OpenStateStore("etcd://x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenStateStore("etcd://h:1,nope/p").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenSqliteStateStore("/nonexistent/dir/s.db").status().code(),
            absl::StatusCode::kUnavailable);
}

// A full database (SQLite's size quota standing in for a full disk) fails the batch that
// does not fit, whole, and only it; the batches around it in the same Commit land.
TEST(SqliteStateStoreTest, FullDatabaseFailsOnlyTheBatchThatDoesNotFit) {
  loadstar::testing::TempDir dir;
  auto store = OpenSqliteStateStore(dir.Join("s.db"), {.max_page_count = 12});
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string big(64 * 1024, 'y');  // needs 16 more pages than there are
  std::vector<absl::Status> results = (*store)->Commit({
      {DeploymentRecord{"a", "model: a\n", 1}},
      {DeploymentRecord{"b", "model: b\n", 1}, DeploymentRecord{"c", big, 1}},
      {LeaseRecord{"l", "a", "i", 9, 1}},
  });
  ASSERT_EQ(results.size(), 3u);
  EXPECT_TRUE(results[0].ok()) << results[0];
  EXPECT_EQ(results[1].code(), absl::StatusCode::kUnavailable) << results[1];
  EXPECT_NE(results[1].message().find("database or disk is full"), absl::string_view::npos)
      << results[1];
  EXPECT_TRUE(results[2].ok()) << results[2];
  auto s = (*store)->Load();
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->deployments.size(), 1u);  // not "b": its batch failed whole
  EXPECT_EQ(s->deployments[0].name, "a");
  EXPECT_EQ(s->leases.size(), 1u);
}

}  // namespace
}  // namespace loadstar::daemon
