// What a new user meets (the issue "what a new user meets"): spread placement, named
// deployments and updates, a scriptable CLI (JSON, exit codes, range checks), visible work
// and warnings. Each test drives the built `loadstar` binary against real daemons.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "tests/deploy/cluster_test.h"

namespace loadstar {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using testing::CliResult;
using testing::Daemon;
using testing::Eventually;

class UserCliTest : public testing::ClusterTest {
 protected:
  void StartCluster(std::vector<std::string> worker_flags = {}) {
    addr_ = "127.0.0.1:" + std::to_string(testing::FreePort());
    controller_ = StartController(addr_);
    worker_ = StartWorker(addr_, "w1", worker_flags);
    ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr_, 1); }));
  }
  std::string addr_;
  std::unique_ptr<Daemon> controller_, worker_;
};

TEST_F(UserCliTest, UsageErrorsExitTwoWithOneLoadstarLine) {
  for (std::vector<std::string> args :
       {std::vector<std::string>{"deploy", "--bogus"}, {"acquire", "m", "--ttl", "0"},
        {"acquire", "m", "--ttl", "-1"}, {"deploy", "--model", "m", "--keep-alive", "-5"},
        {"deploy", "--model", "m", "--max-instances", "0"}, {"release"},
        {"load", "m", "--device-memory-gib", "1"}}) {
    CliResult r = testing::RunCli(args);
    std::string command;
    for (const std::string& a : args) command += " " + a;
    SCOPED_TRACE(command);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_THAT(r.err, StartsWith("loadstar: "));
    EXPECT_THAT(r.err, Not(HasSubstr("179769")));  // a readable range, not DBL_MAX
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_EQ(testing::RunCli({"deploy", "--help"}).exit_code, 0);
}

TEST_F(UserCliTest, DeleteTriesEveryNameAndReportsEach) {
  StartCluster();
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny", "--no-wait"}).exit_code, 0);
  CliResult r = Cli(addr_, {"delete", "ghost", "org/tiny"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("loadstar: deployment 'ghost' does not exist"));
  EXPECT_THAT(r.out, HasSubstr("deleted org/tiny"));
  EXPECT_TRUE(Status(addr_)["deployments"].empty());
}

TEST_F(UserCliTest, JsonPrintsEveryFieldWithNumbersForIntegers) {
  StartCluster();
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny", "--no-wait"}).exit_code, 0);
  nlohmann::json d = Status(addr_)["deployments"][0];
  ASSERT_TRUE(d.contains("min_instances"));
  EXPECT_TRUE(d["min_instances"].is_number());
  EXPECT_EQ(d["min_instances"], 0);
  EXPECT_EQ(d["message"], "");
  CliResult cold = Cli(addr_, {"acquire", "org/tiny", "-o", "json"});
  CliResult warm = Cli(addr_, {"acquire", "org/tiny", "-o", "json"});
  ASSERT_EQ(warm.exit_code, 0) << warm.err;
  nlohmann::json lease = nlohmann::json::parse(warm.out);
  ASSERT_TRUE(lease.contains("cold_start"));
  EXPECT_EQ(lease["cold_start"], false);
  EXPECT_TRUE(lease["expires_unix_ms"].is_number_integer());
  EXPECT_TRUE(lease["instance"]["bytes_total"].is_number_integer());
  EXPECT_EQ(nlohmann::json::parse(cold.out)["cold_start"], true);
  nlohmann::json workers = Status(addr_)["workers"];
  EXPECT_TRUE(workers[0]["info"]["devices"][0]["total_bytes"].is_number_integer());
}

TEST_F(UserCliTest, UpHonoursLoadstarAddr) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  ::setenv("LOADSTAR_ADDR", addr.c_str(), 1);
  Daemon up({"up", "--workers", "1", "--devices", "host:1", "--device-memory", "64MiB",
             "--store", store_dir_, "--state", "sqlite:" + dir_.Join("up.db")},
            dir_.Join("daemons.log"));
  CliResult status = testing::RunCli({"status"});  // dials $LOADSTAR_ADDR too
  ::unsetenv("LOADSTAR_ADDR");
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up.address(), addr);
  EXPECT_EQ(status.exit_code, 0) << status.err;
}

TEST_F(UserCliTest, UpdateRollsANamedDeploymentToItsNewConfig) {
  StartCluster();
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny", "--min-instances", "1"}).exit_code, 0);
  // The same model under a second name, quantized.
  CliResult second = Cli(addr_, {"deploy", "--model", "org/tiny", "--name", "tiny-int8",
                                 "--quantization", "int8", "--min-instances", "1"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  CliResult clash = Cli(addr_, {"deploy", "--model", "org/tiny", "--quantization", "nf4"});
  EXPECT_EQ(clash.exit_code, 1);
  EXPECT_THAT(clash.err, HasSubstr("loadstar update org/tiny"));
  CliResult updated = Cli(addr_, {"update", "org/tiny", "--quantization", "nf4"});
  ASSERT_EQ(updated.exit_code, 0) << updated.err;
  EXPECT_THAT(updated.out, HasSubstr("updated org/tiny"));
  ASSERT_TRUE(Eventually([&] {
    nlohmann::json s = Status(addr_);
    for (const auto& d : s["deployments"]) {
      if (d["name"] != "org/tiny") continue;
      return d["instances"].size() == 1 && d["instances"][0]["quantization"] == "nf4-bs64" &&
             d["instances"][0]["outdated"] == false;
    }
    return false;
  }));
  CliResult text = Cli(addr_, {"status"});
  EXPECT_THAT(text.out, HasSubstr("nf4-bs64"));
  EXPECT_THAT(text.out, HasSubstr("int8"));
  EXPECT_THAT(text.out, HasSubstr("checkpoint"));  // quantized while loading: no artifact
  EXPECT_EQ(Cli(addr_, {"update", "ghost", "--quantization", "nf4"}).exit_code, 1);
}

TEST_F(UserCliTest, RenewPrefetchAndEvict) {
  StartCluster({"--host-cache-bytes", "64MiB"});
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny", "--no-wait"}).exit_code, 0);
  nlohmann::json lease = nlohmann::json::parse(Cli(addr_, {"acquire", "org/tiny", "-o", "json"}).out);
  CliResult renewed = Cli(addr_, {"renew", lease["lease_id"]});
  EXPECT_EQ(renewed.exit_code, 0) << renewed.err;
  EXPECT_THAT(renewed.out, HasSubstr("renewed"));
  EXPECT_EQ(Cli(addr_, {"renew", "lease-nope"}).exit_code, 1);
  CliResult pre = Cli(addr_, {"prefetch", "org/tiny"});
  ASSERT_EQ(pre.exit_code, 0) << pre.err;
  EXPECT_THAT(pre.out, HasSubstr("prefetched org/tiny on w1: host cache now 2.50 MiB"));
  CliResult ev = Cli(addr_, {"evict", "org/tiny", "--worker", "w1"});
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  EXPECT_THAT(ev.out, HasSubstr("host cache now 0 B"));
  CliResult none = Cli(addr_, {"prefetch", "ghost"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_THAT(none.err, HasSubstr("no live worker holds model 'ghost'"));
}

TEST_F(UserCliTest, WarnsOnDeleteWithLeasesAndStoreRmOfADeployedModel) {
  StartCluster();
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny", "--no-wait"}).exit_code, 0);
  ASSERT_EQ(Cli(addr_, {"acquire", "org/tiny"}).exit_code, 0);
  ::setenv("LOADSTAR_ADDR", addr_.c_str(), 1);
  CliResult rm = testing::RunCli({"store", "rm", "org/tiny", "--store", store_dir_});
  ::unsetenv("LOADSTAR_ADDR");
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_THAT(rm.err, HasSubstr("warning: org/tiny is deployed (org/tiny at " + addr_));
  CliResult del = Cli(addr_, {"delete", "org/tiny"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_THAT(del.err, HasSubstr("warning: org/tiny has 1 live lease(s)"));
}

TEST_F(UserCliTest, AcquireTimeoutSaysWhereTheLoadStands) {
  StartCluster({"--max-read-bandwidth", "600000"});  // 3 MiB take ~5 s
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny", "--no-wait"}).exit_code, 0);
  CliResult r = Cli(addr_, {"acquire", "org/tiny", "--timeout", "1.5"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no instance of 'org/tiny' became ready in time (instance i-"));
  EXPECT_THAT(r.err, HasSubstr("loading on w1 at"));
}

TEST_F(UserCliTest, LocalClusterSpreadsReplicasOverItsWorkers) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  Daemon up({"up", "--workers", "2", "--devices", "host:2", "--device-memory", "64MiB",
             "--store", store_dir_, "--addr", addr, "--state", "sqlite:" + dir_.Join("up.db")},
            dir_.Join("daemons.log"));
  ASSERT_TRUE(up.ok());
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 2); }));
  CliResult r = Cli(addr, {"deploy", "--model", "org/tiny", "--min-instances", "4",
                           "--max-instances", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, int> per_worker;
  nlohmann::json status = Status(addr);
  SCOPED_TRACE(status.dump());
  for (const auto& i : status["deployments"][0]["instances"]) {
    ++per_worker[i["worker_id"].get<std::string>()];
  }
  EXPECT_EQ(per_worker["worker-0"], 2);
  EXPECT_EQ(per_worker["worker-1"], 2);
}

TEST_F(UserCliTest, CtrlCOnDeploySaysWhatKeepsRunning) {
  StartCluster({"--max-read-bandwidth", "600000"});  // ~5 s load
  int out_fd = -1, err_fd = -1;
  pid_t pid = testing::SpawnLoadstar(
      {"deploy", "--model", "org/tiny", "--min-instances", "1", "--addr", addr_}, &out_fd, "",
      &err_fd);
  ASSERT_TRUE(Eventually([&] {
    nlohmann::json i = Instances(addr_);
    return i.size() == 1 && i[0].value("state", "") == "loading";
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(pid, SIGINT);
  std::string err = testing::Drain(err_fd, std::chrono::steady_clock::now() + std::chrono::seconds(5));
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(out_fd);
  ::close(err_fd);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << status;
  EXPECT_THAT(err, HasSubstr("loadstar: interrupted; org/tiny stays deployed and its instances "
                             "keep loading (`loadstar status org/tiny`; `loadstar delete "
                             "org/tiny` stops them)"));
  EXPECT_EQ(Instances(addr_).size(), 1u);  // the load goes on
}

TEST_F(UserCliTest, ColdAcquireShowsProgressLikeDeploy) {
  StartCluster({"--max-read-bandwidth", "1000000"});  // ~2.6 s
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny", "--no-wait"}).exit_code, 0);
  CliResult r = Cli(addr_, {"acquire", "org/tiny"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("acquire org/tiny: "));
  EXPECT_THAT(r.err, HasSubstr("cold start"));
  EXPECT_THAT(r.out, HasSubstr("(cold start)"));
}

}  // namespace
}  // namespace loadstar
