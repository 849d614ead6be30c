#include "daemon/metered_state_store.h"

#include <gtest/gtest.h>

#include "tests/daemon/fault_state_store.h"

namespace loadstar::daemon {
namespace {

TEST(MeteredStateStoreTest, CountsEachFailedBatchAndPassesResultsThrough) {
  std::unique_ptr<StateStore> memory = NewMemoryStateStore();
  testing::FaultStateStore faulty(memory.get());
  int failures = 0;
  MeteredStateStore metered(&faulty, [&] { ++failures; });
  ASSERT_TRUE(metered.PutDeployment({"a", "model: a\n", 1}).ok());
  EXPECT_EQ(failures, 0);
  faulty.FailWrites();
  std::vector<absl::Status> results =
      metered.Commit({{DeploymentRecord{"b", "model: b\n", 1}}, {LeaseDeletion{"x"}}});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(failures, 2);
  faulty.Heal();
  EXPECT_EQ(metered.Load()->deployments.size(), 1u);
}

}  // namespace
}  // namespace loadstar::daemon
