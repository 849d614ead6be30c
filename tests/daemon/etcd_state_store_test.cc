// What the etcd state store adds to the conformance fixture (state_store_test.cc): names
// that hold '/', cascades larger than etcd's 128 operations per transaction, and fencing.
// Against a real etcd; skipped, naming the reason, where etcd-server is not installed.
#include "daemon/etcd_state_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "tests/util/etcd_server.h"

namespace loadstar::daemon {
namespace {

class EtcdStateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    etcd_ = loadstar::testing::EtcdServer::Shared();
    if (!etcd_->ok()) GTEST_SKIP() << etcd_->error();
    static int n = 0;
    spec_ = absl::StrCat("etcd://", etcd_->endpoint(), "/etcd-test-", ::getpid(), "-", ++n);
  }
  std::unique_ptr<EtcdStateStore> Open() {
    auto store = EtcdStateStore::Open(spec_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
  int64_t Revision(EtcdStateStore* store) {
    etcdserverpb::RangeRequest r;
    r.set_key("any");
    return store->client()->Range(r)->header().revision();
  }
  loadstar::testing::EtcdServer* etcd_ = nullptr;
  std::string spec_;
};

TEST_F(EtcdStateStoreTest, NamesWithSlashesDoNotCollide) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->PutDeployment({"org", "model: org\n", 1}).ok());
  ASSERT_TRUE(store->PutDeployment({"org/tiny", "model: org/tiny\n", 1}).ok());
  ASSERT_TRUE(store->PutInstance({"i1", "org/tiny", "w", "ready", 0, "0", 1}).ok());
  ASSERT_TRUE(store->PutInstance({"i2", "org", "w", "ready", 0, "0", 1}).ok());
  ASSERT_TRUE(store->PutLease({"l1", "org/tiny", "i1", 9, 1}).ok());
  // Deleting "org" must not take "org/tiny"'s instance or lease with it.
  ASSERT_TRUE(store->DeleteDeployment("org").ok());
  auto s = store->Load();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->deployments.size(), 1u);
  EXPECT_EQ(s->deployments[0].name, "org/tiny");
  ASSERT_EQ(s->instances.size(), 1u);
  EXPECT_EQ(s->instances[0].instance_id, "i1");
  EXPECT_EQ(s->leases.size(), 1u);
}

TEST_F(EtcdStateStoreTest, DeletingADeploymentWithManyLeasesIsOneTransaction) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->PutDeployment({"d", "model: d\n", 1}).ok());
  ASSERT_TRUE(store->PutInstance({"i", "d", "w", "ready", 0, "0", 1}).ok());
  StateBatch leases;
  for (int i = 0; i < 100; ++i) leases.push_back(LeaseRecord{absl::StrCat("l", i), "d", "i", 9, 1});
  ASSERT_TRUE(store->Commit({leases, leases})[1].ok());  // 200 leases, two transactions
  EXPECT_EQ(store->Load()->leases.size(), 100u);
  StateBatch more;
  for (int i = 100; i < 300; ++i) more.push_back(LeaseRecord{absl::StrCat("l", i), "d", "i", 9, 1});
  absl::Status too_many = store->Commit({more})[0];  // 200 puts in one batch: over etcd's 128
  EXPECT_EQ(too_many.code(), absl::StatusCode::kInternal);
  EXPECT_NE(too_many.message().find("128"), absl::string_view::npos) << too_many;
  EXPECT_EQ(store->Load()->leases.size(), 100u) << "a refused batch writes nothing";
  int64_t before = Revision(store.get());
  ASSERT_TRUE(store->DeleteDeployment("d").ok());
  EXPECT_EQ(Revision(store.get()), before + 1) << "one transaction, one revision";
  auto s = store->Load();
  EXPECT_TRUE(s->deployments.empty() && s->instances.empty() && s->leases.empty());
  // A second process (a new leader) sees the same state and can delete by id.
  ASSERT_TRUE(store->PutLease({"x", "d2", "i9", 1, 1}).ok());
  auto other = Open();
  ASSERT_TRUE(other->DeleteLease("x").ok());
  EXPECT_TRUE(store->Load()->leases.empty());
}

TEST_F(EtcdStateStoreTest, AFencedWriterIsRefusedOnceTheFenceKeyIsReplaced) {
  auto old_leader = Open();
  auto new_leader = Open();
  ASSERT_TRUE(old_leader && new_leader);
  std::string key = spec_.substr(spec_.rfind('/')) + "/leader";
  etcdserverpb::PutRequest put;
  put.set_key(key);
  put.set_value("old");
  absl::StatusOr<etcdserverpb::PutResponse> first = old_leader->client()->Put(put);
  ASSERT_TRUE(first.ok()) << first.status();
  old_leader->SetFence(key, first->header().revision());
  ASSERT_TRUE(old_leader->PutDeployment({"before", "model: a\n", 1}).ok());

  // The key is replaced (the old leader's lease expired; another was elected).
  etcdserverpb::TxnRequest replace;
  replace.add_success()->mutable_request_delete_range()->set_key(key);
  ASSERT_TRUE(old_leader->client()->Txn(replace).ok());
  put.set_value("new");
  absl::StatusOr<etcdserverpb::PutResponse> second = new_leader->client()->Put(put);
  ASSERT_TRUE(second.ok());
  new_leader->SetFence(key, second->header().revision());

  int64_t before = Revision(old_leader.get());
  absl::Status refused = old_leader->PutDeployment({"after", "model: b\n", 1});
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.message().find("no longer the leader"), absl::string_view::npos) << refused;
  EXPECT_EQ(Revision(old_leader.get()), before) << "the refused transaction wrote nothing";
  ASSERT_TRUE(new_leader->PutDeployment({"after", "model: b\n", 1}).ok());
  auto s = new_leader->Load();
  ASSERT_EQ(s->deployments.size(), 2u);
}

TEST(EtcdSpecTest, ParsesEndpointsAndPrefix) {
  auto spec = ParseEtcdSpec("etcd://a:2379,b:2380/loadstar/");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->endpoints, (std::vector<std::string>{"a:2379", "b:2380"}));
  EXPECT_EQ(spec->prefix, "/loadstar");
  EXPECT_FALSE(ParseEtcdSpec("etcd://a:2379").ok());
  EXPECT_FALSE(ParseEtcdSpec("etcd://a/p").ok());
  EXPECT_FALSE(ParseEtcdSpec("etcd://,/p").ok());
  EXPECT_EQ(EscapeKeyComponent("org/tiny%1"), "org%2Ftiny%251");
}

}  // namespace
}  // namespace loadstar::daemon
