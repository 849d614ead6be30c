// placement_config through the controller (issue 8 item 3): memory_pool limits which
// workers host an instance, local_disk whose store may be read, each on its own; a
// config no worker can satisfy is refused at Deploy with the key path.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/controller.h"
#include "tests/daemon/controller_fixture.h"

namespace loadstar::daemon {
namespace {

using ::testing::HasSubstr;
using testing::ControllerTest;
using testing::Eventually;

// The worker of the one instance of deployment `name`, once it is ready.
std::string ReadyOn(Controller& c, const std::string& name) {
  std::string worker;
  Eventually([&] {
    auto d = c.GetDeployment(name);
    if (!d.ok() || d->instances_size() != 1 || d->instances(0).state() != "ready") return false;
    worker = d->instances(0).worker_id();
    return true;
  });
  return worker;
}

TEST_F(ControllerTest, MemoryPoolAndLocalDiskEachDecideTheWorker) {
  auto c = Make();
  AddWorker(*c, "w1");
  AddWorker(*c, "w2");
  // Without either, both workers are equal and w1 (first) wins the tie; each field
  // alone moves the instance away from it.
  ASSERT_TRUE(c->Deploy("model: m\nname: free\nauto_scaling_config: {min_instances: 1}\n").ok());
  EXPECT_EQ(ReadyOn(*c, "free"), "w1");
  ASSERT_TRUE(c->Deploy("model: m\nname: pooled\nauto_scaling_config: {min_instances: 1}\n"
                        "placement_config: {memory_pool: [w2]}\n").ok());
  EXPECT_EQ(ReadyOn(*c, "pooled"), "w2");
  ASSERT_TRUE(c->Deploy("model: m\nname: disk\nauto_scaling_config: {min_instances: 1, "
                        "max_instances: 1}\nplacement_config: {local_disk: [w2]}\n").ok());
  EXPECT_EQ(ReadyOn(*c, "disk"), "w2");

  auto nowhere = c->Deploy("model: m\nname: nowhere\nplacement_config: {local_disk: [w9]}\n");
  EXPECT_EQ(nowhere.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(nowhere.status().message()), HasSubstr("placement_config.local_disk"));
  auto no_pool = c->Deploy("model: m\nname: nopool\nplacement_config: {memory_pool: [w9]}\n");
  EXPECT_EQ(no_pool.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(no_pool.status().message()), HasSubstr("placement_config.memory_pool"));
}

}  // namespace
}  // namespace loadstar::daemon
