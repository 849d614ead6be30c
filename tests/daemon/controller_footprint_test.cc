// The exact footprint through the controller (issue 8 item 5): Deploy asks a worker that
// holds the model for its plan (Worker.PlanLoad) and places with those bytes, not the
// checkpoint-size estimate; a plan the worker refuses is refused at Deploy with its code
// and reason; a deployment planned while no worker could answer is planned again once
// one can, and again when the model's listing changes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/controller.h"
#include "tests/daemon/controller_fixture.h"

namespace loadstar::daemon {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ControllerTest;
using testing::Eventually;
using testing::FakeWorkers;
using testing::MiB;

constexpr char kConfig[] = "model: m\nauto_scaling_config: {min_instances: 1}\n";

TEST_F(ControllerTest, PlacementReservesTheWorkersPlannedBytes) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1", 1);  // one 100 MiB device; m lists 10 MiB
  // The load would allocate 30 MiB (say, a cast to fp32 plus padding), not the 10 MiB
  // the checkpoint's size suggests.
  w->loader->SetPlan("m", {30 * MiB});
  auto d = c->Deploy(kConfig);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->footprint_bytes(), ElementsAre(30 * MiB));
  ASSERT_TRUE(Eventually([&] {
    auto got = c->GetDeployment("m");
    return got.ok() && got->instances_size() == 1 && got->instances(0).state() == "ready";
  }));
  EXPECT_EQ(c->GetDeployment("m")->instances(0).device_bytes(), 30 * MiB);
  EXPECT_EQ(w->loader->plan_calls(), 1);  // Deploy's; the pass that placed it reused it
}

TEST_F(ControllerTest, APlanThatCannotFitAnyWorkerIsRefusedAtDeploy) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1", 2);
  // 10 MiB of checkpoint, which the estimate would place; the plan needs 150 MiB on a
  // device of 100.
  w->loader->SetPlan("m", {150 * MiB});
  auto d = c->Deploy(kConfig);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted) << d.status();
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(std::to_string(150 * MiB)));
  EXPECT_EQ(c->GetDeployment("m").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ControllerTest, AWorkersRefusalOfThePlanIsTheDeploysAnswer) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  for (const absl::Status& refusal :
       {absl::InvalidArgumentError("device_map: tensor model.norm.weight is on no GPU"),
        absl::ResourceExhaustedError("backend_config.max_memory.1: the plan puts 9 bytes on "
                                     "GPU 1; its cap is 8"),
        absl::FailedPreconditionError("model m is a pre-quantized gguf checkpoint: ...")}) {
    w->loader->SetPlanError("m", refusal);
    auto d = c->Deploy(kConfig);
    EXPECT_EQ(d.status().code(), refusal.code()) << d.status();
    EXPECT_THAT(std::string(d.status().message()), HasSubstr(std::string(refusal.message())));
    EXPECT_THAT(std::string(d.status().message()), HasSubstr("deployment 'm'"));
    EXPECT_EQ(c->GetDeployment("m").status().code(), absl::StatusCode::kNotFound);
  }
  EXPECT_EQ(w->loader->load_calls(), 0);
}

TEST_F(ControllerTest, AFootprintUnknownAtDeployIsPlannedOnceAWorkerCanAnswer) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  w->loader->SetPlanError("m", absl::UnavailableError("worker busy"));  // cannot tell
  auto d = c->Deploy("model: m\nnum_gpus: 2\n");  // serverless: nothing placed yet
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->footprint_bytes_size(), 0);  // placement estimates meanwhile

  w->loader->SetPlanError("m", absl::OkStatus());
  w->loader->SetPlan("m", {12 * MiB, 12 * MiB});
  // Past the retry delay of an attempt that could not tell (it may still be in flight).
  ASSERT_TRUE(Eventually([&] {
    Pass(*c, 6);
    return c->GetDeployment("m")->footprint_bytes_size() == 2;
  }));
  EXPECT_THAT(c->GetDeployment("m")->footprint_bytes(), ElementsAre(12 * MiB, 12 * MiB));
  const int calls = w->loader->plan_calls();

  // The same listing is not planned again; a re-saved model (another size) is.
  Pass(*c, 3);
  EXPECT_EQ(w->loader->plan_calls(), calls);
  w->loader->AddModel("m", 11 * MiB);
  w->loader->SetPlan("m", {14 * MiB, 13 * MiB});
  Pass(*c, 1);
  ASSERT_TRUE(Eventually([&] {
    auto fp = c->GetDeployment("m")->footprint_bytes();
    return fp.size() == 2 && fp[0] == 14 * MiB;
  }));
  EXPECT_THAT(c->GetDeployment("m")->footprint_bytes(), ElementsAre(14 * MiB, 13 * MiB));
  EXPECT_EQ(w->loader->plan_calls(), calls + 1);
}

}  // namespace
}  // namespace loadstar::daemon
