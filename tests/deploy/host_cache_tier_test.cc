// The DRAM tier fills itself, end to end (issue 14 item 6): a serverless deployment on a
// worker with a host cache; its first cold start reads the disk and admits the model to
// the cache (the worker's heartbeat says in_host_cache); after scale to zero the next
// cold start is served from the cache, and `loadstar status` shows the tier.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "tests/deploy/cluster_test.h"

namespace loadstar {
namespace {

using ::testing::HasSubstr;
using testing::CliResult;
using testing::Eventually;

class HostCacheTierTest : public testing::ClusterTest {
 protected:
  bool InHostCache(const std::string& addr, const std::string& model) {
    nlohmann::json s = Status(addr);
    if (!s.contains("workers") || s["workers"].empty()) return false;
    for (const auto& m : s["workers"][0]["info"]["models"]) {
      if (m.value("name", "") == model) return m.value("in_host_cache", false);
    }
    return false;
  }
};

TEST_F(HostCacheTierTest, ColdStartAfterScaleToZeroComesFromTheHostCache) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartWorker(addr, "w1", {"--host-cache-bytes", "64MiB"});
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));
  EXPECT_FALSE(InHostCache(addr, "org/tiny"));
  ASSERT_EQ(Cli(addr, {"deploy", "--model", "org/tiny", "--keep-alive", "1"}).exit_code, 0);

  CliResult first = Cli(addr, {"acquire", "org/tiny", "-o", "json"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  nlohmann::json cold = nlohmann::json::parse(first.out);
  EXPECT_TRUE(cold.value("cold_start", false));
  EXPECT_EQ(cold["instance"].value("tier", ""), "disk");
  // Admitted while it loaded: the next heartbeat tells the controller.
  EXPECT_TRUE(Eventually([&] { return InHostCache(addr, "org/tiny"); }, 5))
      << Status(addr).dump();

  ASSERT_EQ(Cli(addr, {"release", cold["lease_id"]}).exit_code, 0);
  ASSERT_TRUE(Eventually([&] { return Instances(addr).empty(); }, 8));  // scaled to zero

  CliResult second = Cli(addr, {"acquire", "org/tiny", "-o", "json"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  nlohmann::json again = nlohmann::json::parse(second.out);
  EXPECT_TRUE(again.value("cold_start", false));
  EXPECT_NE(again["instance"]["instance_id"], cold["instance"]["instance_id"]);
  EXPECT_EQ(again["instance"].value("tier", ""), "host_cache");
  nlohmann::json inst = Instances(addr);
  ASSERT_EQ(inst.size(), 1u);
  EXPECT_EQ(inst[0].value("tier", ""), "host_cache");
  CliResult text = Cli(addr, {"status"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("TIER"));
  EXPECT_THAT(text.out, HasSubstr("host_cache"));
}

}  // namespace
}  // namespace loadstar
