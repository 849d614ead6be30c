#include "daemon/deployment_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/cluster_config.h"

namespace loadstar::daemon {
namespace {

using ::testing::HasSubstr;

std::string Error(const std::string& yaml) {
  absl::StatusOr<DeploymentConfig> c = ParseDeploymentConfig(yaml);
  EXPECT_FALSE(c.ok()) << yaml;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(DeploymentConfigTest, ParsesSpecExample) {
  absl::StatusOr<DeploymentConfig> c = ParseDeploymentConfig(R"(
model: facebook/opt-1.3b
num_gpus: 2
backend_config:
  torch_dtype: float16
  device_map: auto
  max_memory: {0: 20GiB, 1: 20GiB}
  quantization_config:
    load_in_8bit: false
    load_in_4bit: true
    bnb_4bit_quant_type: nf4
    bnb_4bit_use_double_quant: true
    bnb_4bit_compute_dtype: bfloat16
    bnb_4bit_blocksize: 64
    llm_int8_threshold: 6.0
    llm_int8_skip_modules: [lm_head]
auto_scaling_config: {metric: concurrency, target: 1, min_instances: 0, max_instances: 4, keep_alive: 60}
placement_config: {local_disk: [worker-a], memory_pool: [worker-a]}
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model, "facebook/opt-1.3b");
  EXPECT_EQ(c->num_gpus, 2u);
  EXPECT_EQ(c->max_memory.at(1), 20ull << 30);
  EXPECT_EQ(c->quantization.type, quant::QuantType::kNf4);
  EXPECT_TRUE(c->quantization.double_quant);
  EXPECT_EQ(c->quantization.compute_dtype, DType::kBF16);
  EXPECT_EQ(c->quantization.torch_dtype, DType::kF16);
  EXPECT_EQ(c->auto_scaling.max_instances, 4u);
  EXPECT_EQ(c->placement.memory_pool, std::vector<std::string>{"worker-a"});
  // The normalized YAML parses back to the same config.
  absl::StatusOr<DeploymentConfig> again = ParseDeploymentConfig(DeploymentConfigToYaml(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(SameDeploymentConfig(*again, *c)) << DeploymentConfigToYaml(*c);
  EXPECT_EQ(again->quantization.VariantKey(), "nf4-bs64-dq");
}

TEST(DeploymentConfigTest, ErrorsNameTheKeyPath) {
  // quant/'s parser words it; the key path is what matters here.
  EXPECT_THAT(Error("model: m\nbackend_config:\n  quantization_config:\n"
                    "    load_in_4bit: true\n    bnb_4bit_blocksize: 48\n"),
              HasSubstr("backend_config.quantization_config.bnb_4bit_blocksize: "));
  EXPECT_THAT(Error("model: m\nnum_gpus: 0\n"), HasSubstr("num_gpus:"));
  EXPECT_THAT(Error("model: m\nbackend_config:\n  quantization_config:\n"
                    "    load_in_4bit: true\n    load_in_8bit: true\n"),
              HasSubstr("backend_config.quantization_config"));
  EXPECT_THAT(Error("model: m\nbackend_config: {torch_dtyp: float16}\n"),
              HasSubstr("backend_config.torch_dtyp: unknown key"));
  EXPECT_THAT(Error("model: m\nnum_gpus: two\n"), HasSubstr("num_gpus: expected an integer"));
  EXPECT_THAT(Error("model: m\nauto_scaling_config: {min_instances: 3, max_instances: 2}\n"),
              HasSubstr("auto_scaling_config.min_instances: 3 is greater than max_instances 2"));
  EXPECT_THAT(Error("model: m\nbackend_config: {max_memory: {0: lots}}\n"),
              HasSubstr("backend_config.max_memory.0:"));
  EXPECT_THAT(Error("model: m\nbackend_config:\n  quantization_config: {bnb_4bit_quant_type: nf5}\n"),
              HasSubstr("backend_config.quantization_config.bnb_4bit_quant_type"));
  EXPECT_THAT(Error("num_gpus: 1\n"), HasSubstr("model: is required"));
  EXPECT_THAT(Error("model: ../etc\n"), HasSubstr("model: '../etc' is not a valid store name"));
  EXPECT_THAT(Error("model: m\nquantization: q3\n"), HasSubstr("quantization"));
  EXPECT_THAT(Error("model: [\n"), HasSubstr("invalid YAML at line"));
}

TEST(DeploymentConfigTest, QuantizationShorthandAndTgiNames) {
  for (const auto& [name, method] : std::vector<std::pair<std::string, std::string>>{
           {"nf4", "nf4"}, {"fp4", "fp4"}, {"int8", "int8"}, {"none", "none"},
           {"bitsandbytes", "int8"}, {"bitsandbytes-nf4", "nf4"}, {"bitsandbytes-fp4", "fp4"}}) {
    absl::StatusOr<DeploymentConfig> c = ParseDeploymentConfig("model: m\nquantization: " + name);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(quant::QuantTypeName(c->quantization.type), method) << name;
    // The normalized form parses back to the same quantization.
    auto again = ParseDeploymentConfig(DeploymentConfigToYaml(*c));
    ASSERT_TRUE(again.ok()) << again.status() << DeploymentConfigToYaml(*c);
    EXPECT_TRUE(SameDeploymentConfig(*again, *c));
  }
  // `keep` (pre-quantized checkpoints as stored) is type none plus the keep flag, and
  // round-trips as the shorthand (it has no BitsAndBytesConfig spelling).
  absl::StatusOr<DeploymentConfig> keep = ParseDeploymentConfig("model: m\nquantization: keep");
  ASSERT_TRUE(keep.ok()) << keep.status();
  EXPECT_EQ(keep->quantization.type, quant::QuantType::kNone);
  EXPECT_TRUE(keep->quantization.keep_prequantized);
  auto keep_again = ParseDeploymentConfig(DeploymentConfigToYaml(*keep));
  ASSERT_TRUE(keep_again.ok()) << keep_again.status() << DeploymentConfigToYaml(*keep);
  EXPECT_TRUE(keep_again->quantization.keep_prequantized);
  EXPECT_TRUE(SameDeploymentConfig(*keep_again, *keep));
  EXPECT_FALSE(SameDeploymentConfig(*keep, *ParseDeploymentConfig("model: m\nquantization: none")));
  EXPECT_THAT(Error("model: m\nquantization: nf4\nbackend_config:\n  quantization_config: "
                    "{load_in_4bit: true}\n"),
              HasSubstr("quantization: given together with"));
}

TEST(DeploymentConfigTest, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("20GiB", "k"), 20ull << 30);
  EXPECT_EQ(*ParseByteSize("512MB", "k"), 512'000'000ull);
  EXPECT_EQ(*ParseByteSize("4096", "k"), 4096ull);
  EXPECT_FALSE(ParseByteSize("12 parsecs", "k").ok());
  EXPECT_EQ(*ParseByteSize(" 1.5 kib ", "k"), 1536ull);
  EXPECT_EQ(*ParseByteSize("2T", "k"), 2'000'000'000'000ull);
  EXPECT_EQ(*ParseByteSize("7B", "k"), 7ull);
  for (const char* bad : {"", "1.", ".5", "1KBB", "1 K B", "1Ki B", "-1", "1e3", "GiB"}) {
    EXPECT_FALSE(ParseByteSize(bad, "k").ok()) << bad;
  }
  // Fuzzer findings: past 2^64 (the cast was undefined) and longer than DBL_MAX's digits.
  EXPECT_THAT(std::string(ParseByteSize("2000000000000000000000000000000000000000000T", "k")
                              .status().message()),
              HasSubstr("too large"));
  EXPECT_FALSE(ParseByteSize(std::string(400, '9'), "k").ok());
  // A long size string overflowed the stack of std::regex.
  EXPECT_EQ(*ParseByteSize(std::string(1 << 20, '0') + "1KiB", "k"), 1024ull);
}

TEST(DeploymentConfigTest, GpuIndicesPastUint32AreRejected) {
  // Cast to uint32 unchecked, 4294967296 became GPU 0 and passed the num_gpus check.
  EXPECT_EQ(ParseDeploymentConfig("model: m\nnum_gpus: 2\n"
                                  "backend_config: {device_map: {model.layers.0: 4294967296}}\n")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDeploymentConfig("model: m\nbackend_config: {max_memory: {4294967296: 1GiB}}\n")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DeploymentConfigTest, RejectsInvalidUtf8) {
  // Fuzzer finding: a non-UTF-8 quantization_config value made the error message's JSON
  // dump throw (terminate) instead of returning INVALID_ARGUMENT.
  auto bad = ParseDeploymentConfig(
      "model: m\nbackend_config:\n  quantization_config: {load_in_4bit: \xc3\x28}\n");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("line 3, column 39: not UTF-8"));
  EXPECT_TRUE(ParseDeploymentConfig("name: m\nmodel: m  # caf\xc3\xa9\n").ok());
}

TEST(ClusterConfigTest, ControllerAndWorker) {
  auto c = ParseControllerConfig("address: 0.0.0.0:9000\nstate: sqlite:/tmp/x.db\n"
                                 "heartbeat_timeout: 5\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->address, "0.0.0.0:9000");
  EXPECT_EQ(c->heartbeat_timeout, 5);
  EXPECT_THAT(std::string(ParseControllerConfig("state: etcd://x\n").status().message()),
              HasSubstr("state: 'etcd://x'"));
  EXPECT_THAT(std::string(ParseControllerConfig("listen: x\n").status().message()),
              HasSubstr("listen: unknown key"));
  auto w = ParseWorkerConfig("devices: host:2\nhost_cache: 8GiB\nio_engine: pread\n"
                             "direct_io: false\n");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->host_cache_bytes, 8ull << 30);
  EXPECT_EQ(w->direct_io, "off");
  EXPECT_TRUE(w->device_memory_pool);  // pooled unless turned off
  auto fresh = ParseWorkerConfig("device_memory_pool: false\n");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE(fresh->device_memory_pool);
  EXPECT_THAT(std::string(ParseWorkerConfig("device_memory_pool: maybe\n").status().message()),
              HasSubstr("device_memory_pool"));
  EXPECT_THAT(std::string(ParseWorkerConfig("chunk_size: 1000\n").status().message()),
              HasSubstr("chunk_size: 1000 is not a positive multiple of 4 KiB"));
}

}  // namespace
}  // namespace loadstar::daemon
