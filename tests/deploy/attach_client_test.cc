// The C++ attach client (deploy/client) against real controller and worker processes:
// this test process is the "engine", a second process beside the worker, mapping the
// instance's shared memory; the mapped bytes must equal what the worker serves over
// ReadTensor. Also `loadstar instance`, the example consumer, and the lifetime rules
// (renewal, delete while leased).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "deploy/client/client.h"
#include "deploy/client/mapped_instance.h"
#include "tests/deploy/cluster_test.h"

namespace loadstar {
namespace {

using ::testing::HasSubstr;
using testing::CliResult;
using testing::Eventually;
namespace v1 = loadstar::v1;

class AttachClientTest : public testing::ClusterTest {
 protected:
  void StartCluster() {
    // One stored copy per quantization: a model has one deployment.
    auto store = store::Store::Open({store_dir_});
    for (const char* name : {"tiny-none", "tiny-nf4", "tiny-int8"}) {
      ASSERT_TRUE((*store)->Save(dir_.Join("hf"), name).ok());
    }
    addr_ = "127.0.0.1:" + std::to_string(testing::FreePort());
    controller_ = StartController(addr_);
    worker_ = StartWorker(addr_, "w1");
    ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr_, 1); }));
    auto c = client::Client::Connect({.address = addr_});
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }

  // Every mapped tensor equals the worker's ReadTensor bytes.
  void ExpectMappedEqualsReadTensor(client::Lease& lease) {
    auto handle = lease.Handle();
    ASSERT_TRUE(handle.ok()) << handle.status();
    auto mapped = client::MappedInstance::Map(*handle);
    ASSERT_TRUE(mapped.ok()) << mapped.status();
    ASSERT_EQ((*mapped)->tensors().size(), static_cast<size_t>(handle->tensors_size()));
    for (const client::TensorView& v : (*mapped)->tensors()) {
      SCOPED_TRACE(v.info->name());
      EXPECT_EQ(v.kind, "host");
      auto served = client_->ReadTensor(lease.lease().instance().worker_address(),
                                        handle->instance_id(), v.info->name());
      ASSERT_TRUE(served.ok()) << served.status();
      ASSERT_EQ(served->size(), v.size);
      EXPECT_EQ(std::memcmp(served->data(), v.data, v.size), 0);
    }
  }

  std::string addr_;
  std::unique_ptr<testing::Daemon> controller_, worker_;
  std::unique_ptr<client::Client> client_;
};

// Connect fails at once, naming every address, when no controller answers (it does not
// hand back a client pinned to one of them).
TEST(AttachClientConnectTest, NoControllerAnsweringIsUnavailableNamingTheAddresses) {
  const std::string both = "127.0.0.1:" + std::to_string(testing::FreePort()) + ",127.0.0.1:" +
                           std::to_string(testing::FreePort());
  auto c = client::Client::Connect({.address = both});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::IsUnavailable(c.status())) << c.status();
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("controller at " + both + " is unreachable"));
}

TEST_F(AttachClientTest, MapsAnInstanceFromAnotherProcessAndMatchesReadTensor) {
  StartCluster();
  // The leases are held to the end, so all three instances stay resident: on the worker's
  // two pooled devices at least two share a pool, one at a non-zero offset, which the
  // client must map exactly (offset and length).
  std::vector<std::unique_ptr<client::Lease>> held;
  bool nonzero_offset = false;
  for (const char* quantization : {"none", "nf4", "int8"}) {
    SCOPED_TRACE(quantization);
    std::string name = std::string("tiny-") + quantization;
    CliResult deployed = Cli(addr_, {"deploy", "--model", name, "--quantization", quantization});
    ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
    auto lease = client_->Acquire(name, 30);
    ASSERT_TRUE(lease.ok()) << lease.status();
    ExpectMappedEqualsReadTensor(**lease);
    auto handle = (*lease)->Handle();
    EXPECT_EQ(handle->worker_id(), "w1");
    EXPECT_EQ(handle->spec().quantization().method(), quantization);
    ASSERT_GE(handle->files_size(), 1);
    EXPECT_EQ(handle->files(0).name(), "config.json");
    bool quantized = false;
    for (const v1::TensorInfo& t : handle->tensors()) quantized |= t.has_quant();
    EXPECT_EQ(quantized, std::string(quantization) != "none");
    for (const v1::MemoryHandle& a : handle->allocations()) nonzero_offset |= a.offset() != 0;
    held.push_back(std::move(*lease));
  }
  EXPECT_TRUE(nonzero_offset);
  for (auto& lease : held) ExpectMappedEqualsReadTensor(*lease);
  for (auto& lease : held) ASSERT_TRUE(lease->Release().ok());
}

// A deployment's torch_dtype casts the unquantized tensors while they stream.
TEST_F(AttachClientTest, TorchDtypeCastsUnquantizedTensors) {
  StartCluster();
  std::string yaml = dir_.Join("f32.yaml");
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), yaml,
                                  "name: tiny-f32\nmodel: org/tiny\n"
                                  "backend_config: {torch_dtype: float32}\n")
                  .ok());
  CliResult deployed = Cli(addr_, {"deploy", "--config", yaml});
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  auto lease = client_->Acquire("tiny-f32", 30);
  ASSERT_TRUE(lease.ok()) << lease.status();
  auto handle = (*lease)->Handle();
  ASSERT_TRUE(handle.ok());
  ASSERT_GT(handle->tensors_size(), 0);
  for (const v1::TensorInfo& t : handle->tensors()) {
    EXPECT_EQ(t.dtype(), "F32") << t.name();
  }
  // model.layers.0.mlp.up_proj.weight is fp16 in the store: twice the bytes as fp32.
  for (const v1::TensorInfo& t : handle->tensors()) {
    if (t.name() == "model.layers.0.mlp.up_proj.weight") EXPECT_EQ(t.size(), 512u * 1024 * 4);
  }
  ExpectMappedEqualsReadTensor(**lease);
}

TEST_F(AttachClientTest, LeaseRenewsPastItsTtlAndDeleteWaitsForIt) {
  StartCluster();
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny"}).exit_code, 0);
  auto lease = client_->Acquire("org/tiny", 1.5);
  ASSERT_TRUE(lease.ok()) << lease.status();
  std::this_thread::sleep_for(std::chrono::seconds(4));  // > 2 TTLs: only renewal keeps it
  EXPECT_TRUE((*lease)->status().ok()) << (*lease)->status();
  EXPECT_TRUE(client_->GetLease((*lease)->id()).ok());
  auto handle = (*lease)->Handle();
  ASSERT_TRUE(handle.ok());
  auto mapped = client::MappedInstance::Map(*handle);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  std::map<std::string, std::string> before;
  for (const client::TensorView& v : (*mapped)->tensors()) {
    before[v.info->name()].assign(static_cast<const char*>(v.data), v.size);
  }
  // Deleting the deployment while the lease is live leaves its memory in place, and a
  // model loaded meanwhile onto the same worker never gets (or overwrites) that memory.
  ASSERT_EQ(Cli(addr_, {"delete", "org/tiny"}).exit_code, 0);
  CliResult other = Cli(addr_, {"deploy", "--model", "tiny-nf4", "--quantization", "nf4",
                                "--min-instances", "2", "--max-instances", "2"});
  ASSERT_EQ(other.exit_code, 0) << other.err;
  ExpectMappedEqualsReadTensor(**lease);
  for (const client::TensorView& v : (*mapped)->tensors()) {
    EXPECT_EQ(std::memcmp(before[v.info->name()].data(), v.data, v.size), 0) << v.info->name();
  }
  mapped->reset();
  std::string instance = (*lease)->lease().instance().instance_id();
  std::string worker = (*lease)->lease().instance().worker_address();
  ASSERT_TRUE((*lease)->Release().ok());
  EXPECT_TRUE(Eventually([&] {
    return absl::IsNotFound(client_->GetInstance(worker, instance).status());
  }));
}

TEST_F(AttachClientTest, InstanceCommandPrintsTheHandle) {
  StartCluster();
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny", "--quantization", "nf4"}).exit_code, 0);
  CliResult acquired = Cli(addr_, {"acquire", "org/tiny", "-o", "json"});
  ASSERT_EQ(acquired.exit_code, 0) << acquired.err;
  nlohmann::json lease = nlohmann::json::parse(acquired.out);
  std::string instance = lease["instance"]["instance_id"];

  CliResult text = Cli(addr_, {"instance", instance});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("instance " + instance + " of org/tiny on worker w1"));
  EXPECT_THAT(text.out, HasSubstr("/loadstar-"));  // the shm object to map
  EXPECT_THAT(text.out, HasSubstr("model.layers.0.mlp.up_proj.weight.absmax"));
  EXPECT_THAT(text.out, HasSubstr("nf4 bs64 of"));

  CliResult json = Cli(addr_, {"instance", "--lease", lease["lease_id"], "-o", "json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  nlohmann::json h = nlohmann::json::parse(json.out);
  EXPECT_EQ(h["instance_id"], instance);
  EXPECT_EQ(h["allocations"][0]["kind"], "host");
  bool saw_quant = false;
  for (const nlohmann::json& t : h["tensors"]) {
    EXPECT_TRUE(t.contains("offset") && t.contains("size") && t.contains("dtype")) << t.dump();
    if (t["name"] == "model.layers.0.mlp.up_proj.weight") {
      saw_quant = true;
      EXPECT_EQ(t["quant"]["type"], "nf4");
      EXPECT_EQ(t["quant"]["shape"], nlohmann::json({512, 1024}));
    }
  }
  EXPECT_TRUE(saw_quant);

  CliResult unknown = Cli(addr_, {"instance", "i-nope"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_EQ(unknown.err, "loadstar: no deployment has an instance i-nope\n");
  CliResult neither = Cli(addr_, {"instance"});
  EXPECT_EQ(neither.exit_code, 2);
  EXPECT_THAT(neither.err, HasSubstr("either INSTANCE_ID or --lease"));
}

TEST_F(AttachClientTest, ExampleRunsTheQuantizedLinearOnAMappedWeight) {
  StartCluster();
  ASSERT_EQ(Cli(addr_, {"deploy", "--model", "org/tiny", "--quantization", "nf4"}).exit_code, 0);
  std::string example = DirName(testing::LoadstarBinary()) + "/loadstar-attach-example";
  testing::CommandResult r = testing::RunShell("'" + example + "' org/tiny --addr " + addr_ +
                                        " --store '" + store_dir_ + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("tensor model.layers.0.mlp.up_proj.weight"));
  // nf4 of uniform weights: a few percent relative error, as the worker's Probe reports.
  size_t at = r.output.find("relative_error ");
  ASSERT_NE(at, std::string::npos);
  double rel = std::stod(r.output.substr(at + 15));
  EXPECT_GT(rel, 0.01);
  EXPECT_LT(rel, 0.2);
  testing::CommandResult missing = testing::RunShell("'" + example + "' ghost --addr " + addr_ +
                                              " --store '" + store_dir_ + "'");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("loadstar-attach-example: deployment 'ghost' does not exist"));
}

TEST(MappedInstanceTest, MissingSharedMemoryIsAClearError) {
  v1::InstanceHandle h;
  h.set_instance_id("i-remote");
  v1::MemoryHandle* a = h.add_allocations();
  a->set_kind("host");
  a->set_shm_name("/loadstar-no-such-object");
  a->set_size(4096);
  auto mapped = client::MappedInstance::Map(h);
  EXPECT_EQ(mapped.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(mapped.status().message()), HasSubstr("another host"));
  EXPECT_THAT(std::string(mapped.status().message()), HasSubstr("ReadTensor"));
}

TEST(MappedInstanceTest, TensorOutsideItsAllocationIsRefused) {
  v1::InstanceHandle h;
  h.set_instance_id("i-bad");
  v1::TensorInfo* t = h.add_tensors();
  t->set_name("w");
  t->set_device(3);
  t->set_size(8);
  auto mapped = client::MappedInstance::Map(h);
  EXPECT_EQ(mapped.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(mapped.status().message()), HasSubstr("tensor 'w'"));
}

}  // namespace
}  // namespace loadstar
