// End to end on loopback: the built `loadstar` binary as controller and worker
// processes, driven by the CLI and by gRPC, including kill -9 of workers and the
// controller. Every wait is bounded.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <thread>

#include "daemon/rpc_util.h"
#include "loader/host_device.h"
#include "loadstar/v1/controller.grpc.pb.h"
#include "loadstar/v1/worker.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "quant/blockwise.h"
#include "quant/policy.h"
#include "quant/quant_state.h"
#include "store/quantized_artifact.h"
#include "store/store.h"
#include "tests/deploy/cluster_test.h"
#include "tests/deploy/process.h"
#include "tests/util/checkpoint_builder.h"

namespace loadstar {
namespace {

using ::testing::HasSubstr;
using testing::CliResult;
using testing::Daemon;
using testing::RunCli;
namespace v1 = loadstar::v1;

using testing::Eventually;

class ControlPlaneTest : public testing::ClusterTest {};

TEST_F(ControlPlaneTest, ColdWarmAcquireThenScaleToZero) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartWorker(addr, "w1");
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));

  CliResult deploy = Cli(addr, {"deploy", "--model", "org/tiny", "--keep-alive", "1",
                                "--target", "2"});
  ASSERT_EQ(deploy.exit_code, 0) << deploy.err;
  EXPECT_EQ(Instances(addr).size(), 0u);  // serverless: nothing loaded until asked

  CliResult first = Cli(addr, {"acquire", "org/tiny", "-o", "json"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  nlohmann::json cold = nlohmann::json::parse(first.out);
  EXPECT_EQ(cold.value("cold_start", false), true);
  CliResult second = Cli(addr, {"acquire", "org/tiny", "-o", "json"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  nlohmann::json warm = nlohmann::json::parse(second.out);
  EXPECT_EQ(warm.value("cold_start", false), false);
  EXPECT_EQ(warm["instance"]["instance_id"], cold["instance"]["instance_id"]);

  // The instance handle from the worker: tensor table + shared-memory handles; the bytes
  // read back equal the checkpoint's.
  std::string worker_addr = cold["instance"]["worker_address"];
  auto stub = v1::Worker::NewStub(daemon::MakeChannel(worker_addr));
  grpc::ClientContext ctx;
  v1::InstanceRequest ireq;
  ireq.set_instance_id(cold["instance"]["instance_id"]);
  v1::InstanceHandle handle;
  grpc::Status got = stub->GetInstance(&ctx, ireq, &handle);
  ASSERT_TRUE(got.ok()) << got.error_message();
  EXPECT_EQ(handle.tensors_size(), 4);
  ASSERT_GE(handle.allocations_size(), 1);
  EXPECT_EQ(handle.allocations(0).kind(), "host");
  EXPECT_FALSE(handle.allocations(0).shm_name().empty());
  grpc::ClientContext rctx;
  v1::ReadTensorRequest rreq;
  rreq.set_instance_id(ireq.instance_id());
  rreq.set_tensor("model.layers.0.mlp.up_proj.weight");
  auto reader = stub->ReadTensor(&rctx, rreq);
  std::string bytes;
  v1::TensorChunk chunk;
  while (reader->Read(&chunk)) bytes += chunk.data();
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(bytes == builder_.Bytes("model.layers.0.mlp.up_proj.weight"));

  ASSERT_EQ(Cli(addr, {"release", cold["lease_id"]}).exit_code, 0);
  ASSERT_EQ(Cli(addr, {"release", warm["lease_id"]}).exit_code, 0);
  // Idle past keep_alive (1 s): scaled to zero.
  EXPECT_TRUE(Eventually([&] { return Instances(addr).empty(); }, 8));
  CliResult status = Cli(addr, {"status"});
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_THAT(status.out, HasSubstr("org/tiny"));
  EXPECT_THAT(status.out, HasSubstr("w1"));
}

TEST_F(ControlPlaneTest, WorkerKilledDuringLoadIsRescheduled) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  // Reads capped at 1.5 MB/s: the 3 MiB model takes about 2 s to load.
  auto w1 = StartWorker(addr, "w1", {"--max-read-bandwidth", "1500000"});
  auto w2 = StartWorker(addr, "w2", {"--max-read-bandwidth", "1500000"});
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 2); }));
  ASSERT_EQ(Cli(addr, {"deploy", "--model", "org/tiny", "--min-instances", "1", "--no-wait"})
                .exit_code, 0);
  std::string victim;
  ASSERT_TRUE(Eventually([&] {
    nlohmann::json inst = Instances(addr);
    if (inst.size() != 1 || inst[0].value("state", "") != "loading") return false;
    victim = inst[0].value("worker_id", "");
    return true;
  }));
  (victim == "w1" ? w1 : w2)->Stop(SIGKILL);
  std::string survivor = victim == "w1" ? "w2" : "w1";
  EXPECT_TRUE(Eventually([&] {
    nlohmann::json inst = Instances(addr);
    return inst.size() == 1 && inst[0].value("worker_id", "") == survivor &&
           inst[0].value("state", "") == "ready";
  }, 15)) << Instances(addr).dump();
}

TEST_F(ControlPlaneTest, ControllerKilledAndRestartedKeepsDeploymentsAndLeases) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartWorker(addr, "w1");
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));
  ASSERT_EQ(Cli(addr, {"deploy", "--model", "org/tiny"}).exit_code, 0);
  CliResult acquired = Cli(addr, {"acquire", "org/tiny", "-o", "json", "--ttl", "120"});
  ASSERT_EQ(acquired.exit_code, 0) << acquired.err;
  nlohmann::json lease = nlohmann::json::parse(acquired.out);

  controller->Stop(SIGKILL);
  controller = StartController(addr);
  nlohmann::json inst = Instances(addr);
  ASSERT_EQ(inst.size(), 1u);
  EXPECT_EQ(inst[0]["instance_id"], lease["instance"]["instance_id"]);
  // The worker reconnects and confirms the instance: a warm acquire, no reload.
  CliResult again = Cli(addr, {"acquire", "org/tiny", "-o", "json"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(nlohmann::json::parse(again.out)["instance"]["instance_id"],
            lease["instance"]["instance_id"]);
  CliResult released = Cli(addr, {"release", lease["lease_id"]});
  EXPECT_EQ(released.exit_code, 0) << released.err;  // the lease survived the restart
}

TEST_F(ControlPlaneTest, LeaseOfAVanishedClientExpires) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartWorker(addr, "w1");
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));
  ASSERT_EQ(Cli(addr, {"deploy", "--model", "org/tiny", "--keep-alive", "60"}).exit_code, 0);
  // The CLI process takes a 1 s lease and exits without releasing or renewing it.
  CliResult acquired = Cli(addr, {"acquire", "org/tiny", "--ttl", "1", "-o", "json"});
  ASSERT_EQ(acquired.exit_code, 0) << acquired.err;
  std::string lease_id = nlohmann::json::parse(acquired.out)["lease_id"];
  EXPECT_TRUE(Eventually([&] {
    nlohmann::json inst = Instances(addr);
    return inst.size() == 1 && inst[0].value("leases", 0) == 0;
  }, 5));
  CliResult release = Cli(addr, {"release", lease_id});
  EXPECT_NE(release.exit_code, 0);
  EXPECT_THAT(release.err, HasSubstr("unknown or expired"));
}

// With fresh device memory (--device-memory-pool false) the load's shm objects go away;
// with the pool (the default) the pool stays, one object, and its memory is free again.
TEST_F(ControlPlaneTest, DeleteDuringLoadCancelsItAndFreesMemory) {
  for (bool pool : {false, true}) {
    SCOPED_TRACE(pool ? "pooled" : "fresh");
    std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
    auto controller = StartController(addr);
    auto worker = StartWorker(addr, "w1", {"--max-read-bandwidth", "1000000",
                                           "--device-memory-pool", pool ? "true" : "false"});
    ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));
    ASSERT_EQ(Cli(addr, {"deploy", "--model", "org/tiny", "--min-instances", "1", "--no-wait"})
                  .exit_code, 0);
    ASSERT_TRUE(Eventually([&] {
      nlohmann::json inst = Instances(addr);
      return inst.size() == 1 && inst[0].value("state", "") == "loading";
    }));
    std::string shm_prefix = loader::HostShmPrefix(worker->pid());
    ASSERT_FALSE(shm_prefix.empty());
    shm_prefix.erase(0, 1);  // file names in /dev/shm have no leading '/'
    auto shm_count = [&] {
      int n = 0;
      for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
        n += e.path().filename().string().rfind(shm_prefix, 0) == 0;
      }
      return n;
    };
    // The load has allocated its device memory (pooled: the worker's two pools).
    if (pool) {
      EXPECT_EQ(shm_count(), 2);
    } else {
      EXPECT_GT(shm_count(), 0);
    }
    CliResult del = Cli(addr, {"delete", "org/tiny"});
    ASSERT_EQ(del.exit_code, 0) << del.err;
    if (!pool) EXPECT_TRUE(Eventually([&] { return shm_count() == 0; }, 3));
    // The worker reports all its device memory free again.
    EXPECT_TRUE(Eventually([&] {
      nlohmann::json inst = Instances(addr);
      nlohmann::json w = Status(addr)["workers"][0]["info"];
      if (!inst.empty()) return false;
      for (const auto& d : w["devices"]) {
        if (d.value("free_bytes", uint64_t{0}) != d.value("total_bytes", uint64_t{1})) return false;
      }
      return true;
    }, 3));
    if (pool) EXPECT_EQ(shm_count(), 2);
  }
}

TEST_F(ControlPlaneTest, BadConfigsAndUnknownModelsAreClearErrors) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartWorker(addr, "w1");
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));
  std::ofstream(dir_.Join("bad.yaml")) << "model: org/tiny\nbackend_config:\n"
                                          "  quantization_config:\n    load_in_4bit: true\n"
                                          "    bnb_4bit_blocksize: 48\n";
  CliResult bad = Cli(addr, {"deploy", "--config", dir_.Join("bad.yaml")});
  EXPECT_EQ(bad.exit_code, 2);
  // One line naming the key path.
  EXPECT_THAT(bad.err, ::testing::StartsWith(
                           "loadstar: backend_config.quantization_config.bnb_4bit_blocksize: "));
  EXPECT_THAT(bad.err, HasSubstr("48"));
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1);
  CliResult unknown = Cli(addr, {"deploy", "--model", "org/nope"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("model 'org/nope' is not in the store"));
  CliResult too_big = Cli(addr, {"deploy", "--model", "org/tiny", "--num-gpus", "8"});
  EXPECT_EQ(too_big.exit_code, 1);
  EXPECT_THAT(too_big.err, HasSubstr("needs 8 devices"));
  CliResult ghost = Cli(addr, {"acquire", "ghost"});
  EXPECT_EQ(ghost.exit_code, 1);
  EXPECT_THAT(ghost.err, HasSubstr("deployment 'ghost' does not exist"));
  CliResult down = Cli("127.0.0.1:" + std::to_string(testing::FreePort()), {"status"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_THAT(down.err, HasSubstr("unreachable"));
  // A list of controllers none of which answers: the error names the whole list.
  const std::string both = "127.0.0.1:" + std::to_string(testing::FreePort()) + ",127.0.0.1:" +
                           std::to_string(testing::FreePort());
  CliResult all_down = Cli(both, {"status"});
  EXPECT_EQ(all_down.exit_code, 1);
  EXPECT_THAT(all_down.err, HasSubstr("controller at " + both + " is unreachable"));
}

TEST_F(ControlPlaneTest, WrongTokenIsUnauthenticated) {
  std::ofstream(dir_.Join("token")) << "s3cret\n";
  std::ofstream(dir_.Join("wrong")) << "guess\n";
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr, {"--token-file", dir_.Join("token")});
  auto worker = StartWorker(addr, "w1", {"--token-file", dir_.Join("token")});
  CliResult none = Cli(addr, {"status"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_THAT(none.err, HasSubstr("missing bearer token"));
  CliResult wrong = Cli(addr, {"status", "--token-file", dir_.Join("wrong")});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_THAT(wrong.err, HasSubstr("wrong bearer token"));
  // With the token the worker registered and everything works, end to end.
  ASSERT_TRUE(Eventually([&] {
    CliResult r = Cli(addr, {"status", "-o", "json", "--token-file", dir_.Join("token")});
    return r.exit_code == 0 && r.out.find("\"w1\"") != std::string::npos;
  }));
  ASSERT_EQ(Cli(addr, {"deploy", "--model", "org/tiny", "--token-file", dir_.Join("token")})
                .exit_code, 0);
  CliResult ok = Cli(addr, {"acquire", "org/tiny", "--token-file", dir_.Join("token")});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  // The worker's own API checks the token too.
  auto stub = v1::Worker::NewStub(daemon::MakeChannel(worker->address()));
  grpc::ClientContext ctx;
  v1::ListModelsResponse models;
  EXPECT_EQ(stub->ListModels(&ctx, {}, &models).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// Writes the nf4 artifact of org/tiny into the store as `store save --quantize nf4` does.
absl::Status WriteNf4Variant(const std::string& store_dir) {
  auto store = store::Store::Open({store_dir});
  if (!store.ok()) return store.status();
  quant::QuantConfig config;
  config.type = quant::QuantType::kNf4;
  return store::SaveQuantizedVariant(**store, "org/tiny", config).status();
}

TEST_F(ControlPlaneTest, QuantizedDeploymentProbe) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartWorker(addr, "w1");
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));
  // First without the stored artifact (the worker quantizes while loading), then with it
  // (the worker reads the quantized bytes): the same quantized tensor table either way.
  std::map<std::string, std::string> first_table;
  for (bool artifact : {false, true}) {
  SCOPED_TRACE(artifact ? "from the artifact" : "quantized while loading");
  if (artifact) {
    ASSERT_EQ(Cli(addr, {"delete", "org/tiny"}).exit_code, 0);
    ASSERT_TRUE(Eventually([&] { return Instances(addr).empty(); }, 8));
    ASSERT_TRUE(WriteNf4Variant(store_dir_).ok());
  }
  ASSERT_EQ(Cli(addr, {"deploy", "--model", "org/tiny", "--quantization", "nf4"}).exit_code, 0);
  CliResult acquired = Cli(addr, {"acquire", "org/tiny", "-o", "json"});
  ASSERT_EQ(acquired.exit_code, 0) << acquired.err;
  nlohmann::json lease = nlohmann::json::parse(acquired.out);
  auto stub = v1::Worker::NewStub(daemon::MakeChannel(lease["instance"]["worker_address"]));
  {
    grpc::ClientContext ctx;
    v1::InstanceRequest ireq;
    ireq.set_instance_id(lease["instance"]["instance_id"]);
    v1::InstanceHandle handle;
    grpc::Status got = stub->GetInstance(&ctx, ireq, &handle);
  ASSERT_TRUE(got.ok()) << got.error_message();
    std::map<std::string, std::string> table;
    for (const v1::TensorInfo& t : handle.tensors()) {
      table[t.name()] = t.dtype();
      if (t.name() == "model.layers.0.mlp.up_proj.weight") {
        EXPECT_EQ(t.dtype(), "U8");
        EXPECT_EQ(t.quant().type(), "nf4");
        EXPECT_EQ(t.quant().blocksize(), 64u);
        EXPECT_GE(t.quant().absmax_offset(), 0);
      }
    }
    EXPECT_EQ(table["model.layers.0.mlp.up_proj.weight.absmax"], "F32");
    EXPECT_EQ(table["model.norm.weight"], "F16");  // cast to torch_dtype
    if (artifact) {
      EXPECT_EQ(table, first_table);
    } else {
      first_table = table;
    }
  }
  grpc::ClientContext ctx;
  v1::ProbeRequest req;
  req.set_instance_id(lease["instance"]["instance_id"]);
  req.set_tensor("model.layers.0.mlp.up_proj.weight");
  v1::ProbeResponse probe;
  grpc::Status s = stub->Probe(&ctx, req, &probe);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // nf4 of uniform [-1, 1) weights: a few percent of relative error, never zero or wild.
  EXPECT_GT(probe.relative_error(), 0.01);
  EXPECT_LT(probe.relative_error(), 0.2);
  EXPECT_GT(probe.max_abs_error(), 0);
  // An unquantized tensor is refused with the reason.
  grpc::ClientContext ctx2;
  req.set_tensor("model.norm.weight");
  EXPECT_EQ(stub->Probe(&ctx2, req, &probe).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(ControlPlaneTest, UpRunsALocalClusterAndStopsOnSigterm) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  Daemon up({"up", "--workers", "2", "--devices", "host:2", "--device-memory", "256MiB",
             "--store", store_dir_, "--addr", addr, "--state",
             "sqlite:" + dir_.Join("up.db")},
            dir_.Join("daemons.log"));
  ASSERT_TRUE(up.ok());
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 2); }));
  CliResult deploy = Cli(addr, {"deploy", "--model", "org/tiny", "--min-instances", "1"});
  ASSERT_EQ(deploy.exit_code, 0) << deploy.err;
  EXPECT_EQ(Instances(addr)[0].value("state", ""), "ready");
  int status = up.Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace loadstar
