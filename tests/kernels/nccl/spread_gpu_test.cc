// The spread paths on real GPUs (SPEC §5 Communicator, loader/spread.h, loader/replica.h):
// over every GPU present, with the NCCL communicator the worker creates
// (loader::CreateCommunicator), a replica copied device-to-device is byte-identical to
// its source, and a tensor_parallel load (plain and nf4) gives the same bytes on the
// per-device and the staged path, equal to the store's shards. Skips without a GPU.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"
#include "kernels/nccl_communicator.h"
#include "loader/communicator.h"
#include "loader/device_backends.h"
#include "loader/device.h"
#include "loader/load_pipeline.h"
#include "loader/quantized_load.h"
#include "loader/replica.h"
#include "loader/spread.h"
#include "tests/kernels/gpu_test_util.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/quant_test_util.h"

namespace loadstar::loader {
namespace {

using loader::testing::TestStore;
using loader::testing::AllocationBytes;
using loader::testing::TinyLlama;

struct Gpus {
  std::vector<std::unique_ptr<Device>> owned;
  std::vector<Device*> all;
  std::unique_ptr<Communicator> comm;
};

// The CUDA backend the module would give, linked into this binary (the GPU bundle ships
// no module: bin/ has the test binaries only), with NCCL's communicator as the module's.
void RegisterNcclBackendOnce() {
  static const absl::Status registered = [] {
    kernels::CudaBackend::Options options;
    options.communicator = [](const std::vector<Device*>& devices)
        -> absl::StatusOr<std::unique_ptr<Communicator>> {
      auto comm = kernels::NcclCommunicator::CreateForDevices(devices);
      if (!comm.ok()) return comm.status();
      return std::unique_ptr<Communicator>(std::move(comm).value());
    };
    static auto* backend = new kernels::CudaBackend(options);
    return RegisterDeviceBackend(backend);
  }();
  ASSERT_TRUE(registered.ok()) << registered;
}

// Every GPU and the communicator over them, or a failure.
void OpenGpus(Gpus* g) {
  ASSERT_NO_FATAL_FAILURE(RegisterNcclBackendOnce());
  auto devices = CreateDevices("cuda");
  ASSERT_TRUE(devices.ok()) << devices.status();
  g->owned = *std::move(devices);
  for (auto& d : g->owned) g->all.push_back(d.get());
  auto comm = CreateCommunicator(g->all);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->name(), "nccl");
  g->comm = *std::move(comm);
}

std::unique_ptr<LoadPipeline> Pipeline() {
  LoadPipeline::Options o;
  o.chunk_bytes = 8192;  // column shards cut mid-row
  o.ring_bytes = 4 << 20;
  auto p = LoadPipeline::Create(o);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

TEST(SpreadGpuTest, ReplicaCopyIsByteIdentical) {
  SKIP_WITHOUT_GPU();
  Gpus g;
  ASSERT_NO_FATAL_FAILURE(OpenGpus(&g));
  TestStore ts;
  ts.Save(TinyLlama(2, 256, 512), "m");
  auto pipeline = Pipeline();
  const int n = static_cast<int>(g.all.size());
  PlanOptions plan;
  plan.placement = n > 1 ? Placement::kTensorParallel : Placement::kSingle;
  auto source = LoadQuantized(*pipeline, ts.store(), "m",
                              loadstar::testing::QuantConfigOf(quant::QuantType::kNf4), g.all,
                              plan);
  ASSERT_TRUE(source.ok()) << source.status();
  std::vector<int> ranks;
  for (int r = 0; r < n; ++r) ranks.push_back(r);
  // Rotated: each GPU's allocation goes to the next GPU (on one GPU, to itself).
  std::vector<int> rotated;
  std::vector<Device*> targets;
  for (int r = 0; r < n; ++r) {
    rotated.push_back((r + 1) % n);
    targets.push_back(g.all[(r + 1) % n]);
  }
  ReplicaCopyStats stats;
  auto replica = CopyReplica(*source->model, targets, ranks, rotated, *g.comm, nullptr, &stats,
                             1 << 20);
  ASSERT_TRUE(replica.ok()) << replica.status();
  for (int d = 0; d < n; ++d) {
    EXPECT_TRUE(AllocationBytes(**replica, d) == AllocationBytes(*source->model, d)) << d;
    EXPECT_NE((*replica)->allocation(d).ptr, source->model->allocation(d).ptr);
  }
  std::printf("replica of %llu bytes over %d GPU(s): %.2f GB/s\n",
              static_cast<unsigned long long>(stats.bytes), n, stats.gbps);
}

TEST(SpreadGpuTest, TensorParallelPerDeviceAndStagedAreIdentical) {
  SKIP_WITHOUT_GPU();
  Gpus g;
  ASSERT_NO_FATAL_FAILURE(OpenGpus(&g));
  const int n = static_cast<int>(g.all.size());
  if (n < 2) GTEST_SKIP() << "tensor_parallel needs 2 GPUs, have " << n;
  TestStore ts;
  loadstar::testing::CheckpointBuilder builder = TinyLlama(2, 256, 512);
  ModelSource source = ts.Save(builder, "m");
  auto pipeline = Pipeline();
  std::vector<int> ranks;
  for (int r = 0; r < n; ++r) ranks.push_back(r);
  for (bool nf4 : {false, true}) {
    std::vector<std::unique_ptr<LoadedModel>> models;
    for (SpreadPath path : {SpreadPath::kPerDevice, SpreadPath::kStaged}) {
      SpreadOptions spread{path, g.comm.get(), ranks};
      PlanOptions plan;
      plan.placement = Placement::kTensorParallel;
      plan.spread = &spread;
      quant::QuantConfig config =
          loadstar::testing::QuantConfigOf(nf4 ? quant::QuantType::kNf4 : quant::QuantType::kNone);
      auto loaded = LoadQuantized(*pipeline, ts.store(), "m", config, g.all, plan);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      testing::ExpectShardsEqual(
          *loaded->model,
          testing::ExpectedShards(builder, source.manifest, n, nf4 ? &config : nullptr));
      models.push_back(std::move(loaded->model));
    }
    // Both equal the expected shards, so they are identical tensor for tensor (padding
    // is not compared: cudaMalloc does not clear it).
    ASSERT_EQ(models[0]->tensors().size(), models[1]->tensors().size());
  }
}

}  // namespace
}  // namespace loadstar::loader
