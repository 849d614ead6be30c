// StateWriter: batches reach the store in submission order, waiting ones are grouped into
// one commit, failures reach the waiter, and background batches are committed by the
// writer's thread (also what is queued when it is destroyed).
#include "daemon/state_writer.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

#include "tests/daemon/controller_fixture.h"
#include "tests/daemon/fault_state_store.h"

namespace loadstar::daemon {
namespace {

using testing::Eventually;
using testing::FaultStateStore;

TEST(StateWriterTest, OrderGroupingAndFailures) {
  std::unique_ptr<StateStore> memory = NewMemoryStateStore();
  FaultStateStore store(memory.get());
  StateWriter writer(&store);
  ASSERT_TRUE(writer.Submit({LeaseRecord{"l", "d", "i", 1, 1}})->Wait().ok());

  // Held: the first commit (run by its waiter) stays in the store while ten more batches
  // queue up; the next waiter then commits all ten at once.
  store.HoldWrites();
  auto first = writer.Submit({LeaseDeletion{"l"}});
  absl::Status first_status = absl::UnknownError("not waited");
  std::thread first_waiter([&] { first_status = first->Wait(); });
  ASSERT_TRUE(Eventually([&] { return store.waiting() == 1; }));
  std::vector<std::shared_ptr<StateWriter::Pending>> rest;
  for (int i = 0; i < 10; ++i) {
    rest.push_back(writer.Submit({LeaseRecord{"l", "d", "i", 2 + i, 1}}));
  }
  EXPECT_EQ(writer.stats().queued, 10u);
  store.ReleaseWrites();
  first_waiter.join();
  EXPECT_TRUE(first_status.ok());
  for (auto& p : rest) EXPECT_TRUE(p->Wait().ok());
  EXPECT_EQ(store.commits(), (std::vector<size_t>{1, 1, 10}));
  StateWriter::Stats stats = writer.stats();
  EXPECT_EQ(stats.commits, 3u);
  EXPECT_EQ(stats.batches, 12u);
  auto snap = memory->Load();
  ASSERT_EQ(snap->leases.size(), 1u);
  EXPECT_EQ(snap->leases[0].expires_unix_ms, 11);  // the last one submitted won

  store.FailWrites();
  absl::Status failed = writer.Submit({LeaseDeletion{"l"}})->Wait();
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable);
  writer.SubmitLogged({LeaseDeletion{"l"}}, "a background write");  // logged, not fatal
  store.Heal();
  EXPECT_EQ(memory->Load()->leases.size(), 1u);
}

TEST(StateWriterTest, BackgroundBatchesAreCommittedWithoutAWaiter) {
  std::unique_ptr<StateStore> memory = NewMemoryStateStore();
  StateWriter writer(memory.get());
  writer.SubmitLogged({LeaseRecord{"l", "d", "i", 1, 1}}, "lease");
  EXPECT_TRUE(Eventually([&] { return memory->Load()->leases.size() == 1; }));
}

TEST(StateWriterTest, DestructorCommitsWhatIsQueued) {
  std::unique_ptr<StateStore> memory = NewMemoryStateStore();
  {
    StateWriter writer(memory.get());
    for (int i = 0; i < 100; ++i) {
      writer.SubmitLogged({LeaseRecord{"l" + std::to_string(i), "d", "i", 1, 1}}, "lease");
    }
  }
  EXPECT_EQ(memory->Load()->leases.size(), 100u);
}

}  // namespace
}  // namespace loadstar::daemon
