// Durability of the controller's state changes (SPEC §7): a call answers OK only once its
// write is durable, a failed write fails the call and leaves memory (and the store) as
// they were, and a write in flight holds up neither reads nor heartbeats.
// Failures come from FaultStateStore (injected) and from SQLite itself (a full database).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "daemon/controller.h"
#include "tests/daemon/controller_fixture.h"
#include "tests/daemon/fault_state_store.h"
#include "tests/util/test_util.h"

namespace loadstar::daemon {
namespace {

using ::testing::HasSubstr;
using testing::ControllerTest;
using testing::Eventually;
using testing::FakeWorkers;
using testing::FaultStateStore;

// Everything a client can read about deployments, workers and the given leases.
std::string MemoryView(Controller& c, const std::vector<std::string>& lease_ids) {
  std::string out;
  for (const auto& d : c.ListDeployments()) out += d.ShortDebugString() + "\n";
  for (const auto& w : c.ListWorkers()) out += w.ShortDebugString() + "\n";
  for (const std::string& id : lease_ids) {
    auto lease = c.GetLease(id);
    out += lease.ok() ? lease->ShortDebugString() : lease.status().ToString();
    out += "\n";
  }
  return out;
}

bool SameSnapshot(const StateSnapshot& a, const StateSnapshot& b) {
  return a.deployments == b.deployments && a.instances == b.instances && a.leases == b.leases &&
         a.workers == b.workers;
}

class ControllerDurabilityTest : public ControllerTest {
 protected:
  void SetUp() override {
    ControllerTest::SetUp();
    fault_ = std::make_unique<FaultStateStore>(state_.get());
  }

  // A controller over the fault store, one worker, and deployment "m" with one ready
  // instance.
  std::unique_ptr<Controller> MakeWithReadyInstance() {
    auto c = Make(fault_.get());
    AddWorker(*c, "w1");
    EXPECT_TRUE(c->Deploy("model: m\nauto_scaling_config: {min_instances: 1, target: 100}\n").ok());
    c->Tick();
    EXPECT_TRUE(Eventually([&] {
      auto d = c->GetDeployment("m");
      return d.ok() && d->instances_size() == 1 && d->instances(0).state() == "ready";
    }));
    return c;
  }

  // Waits until the background writes queued so far are in the store (a Release, being
  // durable itself, is committed behind them).
  StateSnapshot Stored() {
    auto snap = state_->Load();
    EXPECT_TRUE(snap.ok());
    return *snap;
  }

  std::unique_ptr<FaultStateStore> fault_;
};

TEST_F(ControllerDurabilityTest, FailedDeployChangesNothing) {
  auto c = MakeWithReadyInstance();
  const std::string before = MemoryView(*c, {});
  const StateSnapshot stored = Stored();

  fault_->FailWrites();
  auto added = c->Deploy("model: m\nname: other\n");
  EXPECT_EQ(added.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(added.status().message()), HasSubstr("deploy 'other'"));
  EXPECT_THAT(std::string(added.status().message()), HasSubstr("injected: disk I/O error"));
  auto replaced = c->Deploy("model: m\nauto_scaling_config: {min_instances: 1, target: 50}\n", true);
  EXPECT_EQ(replaced.status().code(), absl::StatusCode::kUnavailable);
  c->Tick();
  EXPECT_EQ(MemoryView(*c, {}), before);
  EXPECT_EQ(c->GetDeployment("other").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(SameSnapshot(Stored(), stored));

  // The same calls succeed once the store does: the failure was the store's.
  fault_->Heal();
  EXPECT_TRUE(c->Deploy("model: m\nname: other\n").ok());
  EXPECT_EQ(c->ListDeployments().size(), 2u);
}

TEST_F(ControllerDurabilityTest, FailedAcquireRenewReleaseChangeNothing) {
  auto c = MakeWithReadyInstance();
  auto held = c->Acquire("m", 30, Deadline());
  ASSERT_TRUE(held.ok()) << held.status();
  clock_.Advance(5);  // a renewal would move the expiry
  const std::string before = MemoryView(*c, {held->lease_id()});
  const StateSnapshot stored = Stored();
  ASSERT_EQ(stored.leases.size(), 1u);

  fault_->FailWrites();
  auto acquired = c->Acquire("m", 30, Deadline());
  EXPECT_EQ(acquired.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(acquired.status().message()), HasSubstr("acquire 'm'"));
  auto renewed = c->RenewLease(held->lease_id());
  EXPECT_EQ(renewed.status().code(), absl::StatusCode::kUnavailable);
  absl::Status released = c->Release(held->lease_id());
  EXPECT_EQ(released.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(released.message()), HasSubstr("release lease " + held->lease_id()));
  EXPECT_EQ(MemoryView(*c, {held->lease_id()}), before);
  EXPECT_EQ(c->GetDeployment("m")->instances(0).leases(), 1u);
  EXPECT_TRUE(SameSnapshot(Stored(), stored));

  fault_->Heal();
  auto again = c->Acquire("m", 30, Deadline());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(c->GetDeployment("m")->instances(0).leases(), 2u);
  auto renewed_now = c->RenewLease(held->lease_id());
  ASSERT_TRUE(renewed_now.ok());
  EXPECT_GT(renewed_now->expires_unix_ms(), held->expires_unix_ms());
  EXPECT_TRUE(c->Release(held->lease_id()).ok());
  EXPECT_EQ(Stored().leases.size(), 1u);
}

TEST_F(ControllerDurabilityTest, FailedDeleteChangesNothing) {
  auto c = MakeWithReadyInstance();
  auto held = c->Acquire("m", 30, Deadline());
  ASSERT_TRUE(held.ok());
  const std::string before = MemoryView(*c, {held->lease_id()});
  const StateSnapshot stored = Stored();

  fault_->FailWrites(absl::InternalError("injected: constraint failed"));
  absl::Status deleted = c->Delete("m");
  EXPECT_EQ(deleted.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(deleted.message()), HasSubstr("delete 'm'"));
  EXPECT_THAT(std::string(deleted.message()), HasSubstr("injected: constraint failed"));
  EXPECT_EQ(MemoryView(*c, {held->lease_id()}), before);
  EXPECT_EQ(c->GetDeployment("m")->instances(0).state(), "ready");
  EXPECT_TRUE(SameSnapshot(Stored(), stored));

  fault_->Heal();
  ASSERT_TRUE(c->Delete("m").ok());
  EXPECT_EQ(c->GetDeployment("m").status().code(), absl::StatusCode::kNotFound);
  // The leased instance drains, in the store too: a restart still unloads it at the end.
  StateSnapshot after = Stored();
  EXPECT_TRUE(after.deployments.empty());
  ASSERT_EQ(after.instances.size(), 1u);
  EXPECT_EQ(after.instances[0].state, "unloading");
  EXPECT_EQ(after.leases.size(), 1u);
}

TEST_F(ControllerDurabilityTest, FailedRegistrationChangesNothing) {
  auto c = Make(fault_.get());
  FakeWorkers::Node* node = workers_.Add("w1", 2, 100 * testing::MiB);
  fault_->FailWrites();
  absl::Status registered = c->RegisterWorker(node->manager->Info());
  EXPECT_EQ(registered.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(registered.message()), HasSubstr("register worker w1"));
  EXPECT_FALSE(c->Heartbeat(node->manager->Info()).ok());  // a heartbeat would register it
  EXPECT_TRUE(c->ListWorkers().empty());
  EXPECT_TRUE(Stored().workers.empty());
  fault_->Heal();
  EXPECT_TRUE(c->RegisterWorker(node->manager->Info()).ok());
  EXPECT_EQ(c->ListWorkers().size(), 1u);
}

// While a lease write is stuck in the store, Acquire has not answered, and reads and
// heartbeats are served: the write holds no lock they take.
TEST_F(ControllerDurabilityTest, WriteInFlightBlocksNeitherReadsNorHeartbeats) {
  auto c = MakeWithReadyInstance();
  fault_->HoldWrites();
  std::atomic<bool> answered{false};
  std::thread acquirer([&] {
    auto lease = c->Acquire("m", 30, Deadline());
    EXPECT_TRUE(lease.ok()) << lease.status();
    answered = true;
  });
  ASSERT_TRUE(Eventually([&] { return fault_->waiting() == 1; }));
  auto reads = std::async(std::launch::async, [&] {
    bool ok = c->GetDeployment("m").ok() && c->ListDeployments().size() == 1 &&
              c->ListWorkers().size() == 1;
    Heartbeat(*c, nodes_[0]);
    c->Tick();
    return ok;
  });
  ASSERT_EQ(reads.wait_for(std::chrono::seconds(5)), std::future_status::ready)
      << "a read or heartbeat waited for the state write";
  EXPECT_TRUE(reads.get());
  EXPECT_FALSE(answered) << "Acquire answered before its lease was durable";
  EXPECT_EQ(c->GetDeployment("m")->instances(0).leases(), 0u);  // not applied yet
  fault_->ReleaseWrites();
  acquirer.join();
  EXPECT_TRUE(answered);
  EXPECT_EQ(c->GetDeployment("m")->instances(0).leases(), 1u);
  EXPECT_EQ(Stored().leases.size(), 1u);
}

// Acquires that arrive while a commit is running share the next one (group commit).
TEST_F(ControllerDurabilityTest, ConcurrentAcquiresShareACommit) {
  auto c = MakeWithReadyInstance();
  fault_->HoldWrites();
  constexpr int kClients = 8;
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] { ok += c->Acquire("m", 30, Deadline()).ok(); });
  }
  // The first commit is held (with the lease writes that were queued when it began); the
  // others queue up behind it.
  ASSERT_TRUE(Eventually([&] {
    return fault_->waiting() == 1 &&
           fault_->waiting_batches() + c->state_write_stats().queued >= size_t{kClients};
  }));
  const size_t commits_before = fault_->commits().size();
  fault_->ReleaseWrites();
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ok, kClients);
  std::vector<size_t> commits = fault_->commits();
  size_t lease_commits = commits.size() - commits_before;
  EXPECT_LE(lease_commits, 2u) << "8 waiting lease writes took " << lease_commits << " commits";
  EXPECT_EQ(Stored().leases.size(), static_cast<size_t>(kClients));
}

// A full database under SQLite fails the call that does not fit, with memory and store as
// before it. A tiny tmpfs would need mount rights (root or a user namespace), which a test
// must not require, so the "disk" is SQLite's own size quota: PRAGMA max_page_count
// (SqliteStateStoreOptions), which fails writes past it with SQLITE_FULL as a full disk
// does.
TEST_F(ControllerDurabilityTest, FullSqliteDatabaseFailsCleanly) {
  loadstar::testing::TempDir dir;
  auto sqlite = OpenSqliteStateStore(dir.Join("state.db"), {.max_page_count = 24});
  ASSERT_TRUE(sqlite.ok()) << sqlite.status();
  std::vector<std::string> granted;
  size_t deployments = 0;
  {
    auto c = Make(sqlite->get());
    AddWorker(*c, "w1");
    ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {min_instances: 1, target: 100000}\n").ok());
    c->Tick();
    ASSERT_TRUE(Eventually([&] { return c->GetDeployment("m")->instances(0).state() == "ready"; }));
    absl::Status failure;
    for (int i = 0; i < 20000 && failure.ok(); ++i) {
      const std::string before = MemoryView(*c, {});
      auto lease = c->Acquire("m", 300, Deadline());
      if (lease.ok()) {
        granted.push_back(lease->lease_id());
        continue;
      }
      failure = lease.status();
      EXPECT_EQ(MemoryView(*c, {}), before);
    }
    ASSERT_FALSE(failure.ok()) << "the database never filled up";
    EXPECT_EQ(failure.code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(failure.message()), HasSubstr("database or disk is full"));
    EXPECT_EQ(c->GetDeployment("m")->instances(0).leases(), granted.size());
    for (const std::string& id : {granted.front(), granted.back()}) EXPECT_TRUE(c->GetLease(id).ok());

    // New deployments fill the deployments table's last page, then one does not fit.
    absl::Status deploy_failure;
    size_t fitted = 0;
    for (int i = 0; i < 1000 && deploy_failure.ok(); ++i) {
      const std::string before = MemoryView(*c, {});
      auto other = c->Deploy(fmt::format("model: m\nname: other-{}\n", i));
      if (other.ok()) {
        ++fitted;
        continue;
      }
      deploy_failure = other.status();
      EXPECT_EQ(MemoryView(*c, {}), before);
    }
    EXPECT_EQ(deploy_failure.code(), absl::StatusCode::kUnavailable) << deploy_failure;
    EXPECT_THAT(std::string(deploy_failure.message()), HasSubstr("database or disk is full"));
    deployments = c->ListDeployments().size();
    EXPECT_EQ(deployments, 1 + fitted);  // "m" and the ones that fit
  }
  // What the store holds is exactly what was answered OK.
  sqlite->reset();
  auto reopened = OpenSqliteStateStore(dir.Join("state.db"));
  ASSERT_TRUE(reopened.ok());
  auto snap = (*reopened)->Load();
  ASSERT_TRUE(snap.ok());
  std::vector<std::string> stored;
  for (const LeaseRecord& l : snap->leases) stored.push_back(l.lease_id);
  std::sort(granted.begin(), granted.end());
  EXPECT_EQ(stored, granted);
  EXPECT_EQ(snap->deployments.size(), deployments);
}

}  // namespace
}  // namespace loadstar::daemon
