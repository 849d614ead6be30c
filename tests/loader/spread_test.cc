// The two ways a multi-device load moves its bytes (loader/spread.h): per device, and
// staged through device 0 plus the Communicator. Both must put every byte where the plan
// says, identically, for tensor_parallel and device_map auto on host:2 and host:4, over
// the whole communicator (Broadcast / Scatter) and over a subset of its ranks (Copy).
#include "loader/spread.h"

#include <atomic>
#include <cstdio>
#include <map>
#include <set>
#include <memory>

#include "gtest/gtest.h"
#include "loader/host_communicator.h"
#include "loader/host_device.h"
#include "loader/load_pipeline.h"
#include "tests/loader/loader_test_util.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::CheckpointBuilder;
using testing::TestStore;
using testing::TinyLlama;

struct Devices {
  explicit Devices(int n) {
    for (int d = 0; d < n; ++d) {
      owned.push_back(std::make_unique<HostDevice>(d, 1ull << 30));
      all.push_back(owned.back().get());
    }
  }
  std::vector<std::unique_ptr<HostDevice>> owned;
  std::vector<Device*> all;
};

std::unique_ptr<LoadPipeline> Pipeline(uint64_t chunk_bytes) {
  LoadPipeline::Options options;
  options.chunk_bytes = chunk_bytes;
  options.ring_bytes = 1 << 20;
  options.threads = 2;
  auto p = LoadPipeline::Create(options);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

// Every byte of each device's allocation, padding included (both paths fill the same
// plan, and fresh host-device memory is zero).
std::vector<std::string> AllocationBytes(const LoadedModel& model) {
  std::vector<std::string> out;
  for (int d = 0; d < model.num_devices(); ++d) {
    const Allocation& a = model.allocation(d);
    std::string bytes(a.size, '\0');
    if (a.size > 0) {
      EXPECT_TRUE(model.device(d)->CopyToHost(bytes.data(), a, 0, a.size).ok());
    }
    out.push_back(std::move(bytes));
  }
  return out;
}

// Counts the calls of each kind, so the test sees which primitives a path used.
class CountingCommunicator : public Communicator {
 public:
  explicit CountingCommunicator(Communicator* base) : base_(base) {}
  std::string name() const override { return base_->name(); }
  int size() const override { return base_->size(); }
  absl::Status Broadcast(int root, std::span<const DeviceSpan> buffers,
                         uint64_t bytes) override {
    ++broadcasts;
    return base_->Broadcast(root, buffers, bytes);
  }
  absl::Status Copy(const DeviceSpan& src, const DeviceSpan& dst) override {
    ++copies;
    return base_->Copy(src, dst);
  }
  absl::Status Scatter(const DeviceSpan& src, std::span<const DeviceSpan> dsts,
                       uint64_t bytes_each) override {
    ++scatters;
    return base_->Scatter(src, dsts, bytes_each);
  }
  int total() const { return broadcasts + copies + scatters; }
  std::atomic<int> broadcasts{0}, copies{0}, scatters{0};

 private:
  Communicator* base_;
};

struct Case {
  Placement placement;
  int devices;       // the load's
  int comm_ranks;    // the communicator's (> devices: the load uses a subset)
  uint64_t chunk;    // ring slot / read size
};

class SpreadTest : public ::testing::TestWithParam<Case> {};

TEST_P(SpreadTest, BothPathsPutEveryByteWhereThePlanSays) {
  const Case c = GetParam();
  TestStore ts;
  CheckpointBuilder builder = TinyLlama(4, 128, 256);
  ModelSource source = ts.Save(builder, "m");
  Devices devices(c.comm_ranks);
  // The load uses the last `c.devices` of the communicator's devices.
  std::vector<Device*> used(devices.all.end() - c.devices, devices.all.end());
  std::vector<int> ranks;
  for (int d = c.comm_ranks - c.devices; d < c.comm_ranks; ++d) ranks.push_back(d);
  auto comm = HostCommunicator::Create(devices.all);
  ASSERT_TRUE(comm.ok()) << comm.status();
  auto pipeline = Pipeline(c.chunk);

  std::map<SpreadPath, std::unique_ptr<LoadedModel>> models;
  for (SpreadPath path : {SpreadPath::kPerDevice, SpreadPath::kStaged}) {
    CountingCommunicator counting(comm->get());
    SpreadOptions spread{path, &counting, ranks};
    PlanOptions plan;
    plan.placement = c.placement;
    plan.spread = &spread;
    LoadStats stats;
    auto model = pipeline->Load(source, used, plan, nullptr, {}, &stats);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(stats.spread, SpreadPathName(path));
    models[path] = *std::move(model);
    if (path == SpreadPath::kPerDevice) {
      EXPECT_EQ(counting.total(), 0);  // host -> device copies only
      continue;
    }
    // Staged: the bytes for devices other than the first moved by the communicator.
    EXPECT_GT(counting.total(), 0);
    const bool all_ranks = c.devices == c.comm_ranks;
    if (c.placement == Placement::kTensorParallel && all_ranks) {
      EXPECT_GT(counting.broadcasts, 0);  // norms
      EXPECT_GT(counting.scatters, 0);    // a split tensor within one chunk
    }
    if (!all_ranks) {
      EXPECT_EQ(counting.broadcasts + counting.scatters, 0);  // a subset: Copy only
      EXPECT_GT(counting.copies, 0);
    }
    std::printf("%s %d/%d devices, %llu-byte chunks: %d broadcasts, %d scatters, %d copies\n",
                c.placement == Placement::kAuto ? "auto" : "tensor_parallel", c.devices,
                c.comm_ranks, static_cast<unsigned long long>(c.chunk), counting.broadcasts.load(),
                counting.scatters.load(), counting.copies.load());
  }
  // Where the plan says, with the store's bytes.
  for (const auto& [path, model] : models) {
    if (c.placement == Placement::kTensorParallel) {
      testing::ExpectShardsEqual(*model, testing::ExpectedShards(builder, source.manifest,
                                                                 c.devices, nullptr));
    } else {
      std::set<int> devices_used;
      for (const LoadedTensor& t : model->tensors()) {
        auto bytes = model->ReadTensor(t);
        ASSERT_TRUE(bytes.ok());
        EXPECT_TRUE(*bytes == builder.Bytes(t.name)) << t.name << " " << SpreadPathName(path);
        devices_used.insert(t.device);
      }
      EXPECT_EQ(static_cast<int>(devices_used.size()), c.devices);  // really spread
    }
  }
  // Identical, byte for byte, padding included.
  EXPECT_TRUE(AllocationBytes(*models[SpreadPath::kPerDevice]) ==
              AllocationBytes(*models[SpreadPath::kStaged]));
  ASSERT_EQ(models[SpreadPath::kPerDevice]->tensors().size(),
            models[SpreadPath::kStaged]->tensors().size());
  for (size_t i = 0; i < models[SpreadPath::kStaged]->tensors().size(); ++i) {
    const LoadedTensor& a = models[SpreadPath::kPerDevice]->tensors()[i];
    const LoadedTensor& b = models[SpreadPath::kStaged]->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.device, b.device);
    EXPECT_EQ(a.offset, b.offset);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Placements, SpreadTest,
    ::testing::Values(
        // Whole communicator: Broadcast (replicated), Scatter (small split tensors in one
        // chunk; whole rows of column shards), Copy (chunks cutting rows).
        Case{Placement::kTensorParallel, 2, 2, 4 << 20}, Case{Placement::kTensorParallel, 4, 4, 4096},
        Case{Placement::kTensorParallel, 4, 4, 12288}, Case{Placement::kAuto, 2, 2, 4096},
        Case{Placement::kAuto, 4, 4, 4 << 20},
        // A subset of the ranks: point-to-point Copy only.
        Case{Placement::kTensorParallel, 2, 4, 4096}, Case{Placement::kAuto, 3, 4, 8192}),
    [](const ::testing::TestParamInfo<Case>& info) {
      const Case& c = info.param;
      return std::string(c.placement == Placement::kAuto ? "Auto" : "TensorParallel") +
             std::to_string(c.devices) + "Of" + std::to_string(c.comm_ranks) + "Chunk" +
             std::to_string(c.chunk);
    });

TEST(SpreadTest, StagedWithoutCommunicatorIsRefused) {
  TestStore ts;
  ModelSource source = ts.Save(TinyLlama(1, 64, 64), "m");
  Devices devices(2);
  auto pipeline = Pipeline(4096);
  SpreadOptions spread{SpreadPath::kStaged, nullptr, {0, 1}};
  PlanOptions plan;
  plan.placement = Placement::kTensorParallel;
  plan.spread = &spread;
  auto model = pipeline->Load(source, devices.all, plan);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(devices.owned[0]->free_memory(), devices.owned[0]->total_memory());
}

TEST(SpreadTest, ChooseSpreadPathFollowsTheBandwidths) {
  TestStore ts;
  // A large replicated tensor (no tensor-parallel role): 256 KiB on every device.
  CheckpointBuilder builder = TinyLlama(2, 64, 64);
  builder.Add("model.rotary_table.weight", DType::kF16, {2048, 64});
  ModelSource source = ts.Save(builder, "m");
  PlanOptions options;
  options.placement = Placement::kTensorParallel;
  auto plan = MakeLoadPlan(source.manifest, 4, options);
  ASSERT_TRUE(plan.ok());
  SpreadTraffic t = MeasureTraffic(source.manifest, *plan);
  // Replicated tensors cross the host link once per device, once staged; split weights
  // once either way.
  EXPECT_GT(t.per_device_h2d, t.staged_h2d);
  EXPECT_GT(t.staged_d2d, 0u);
  EXPECT_EQ(t.staged_h2d, plan->source_bytes);
  // Parallel host links as fast as one, a fast device fabric: staging pays off.
  SpreadBandwidths nvlink{.host_to_device = 25e9, .host_to_devices_parallel = 25e9,
                          .device_to_device = 300e9};
  EXPECT_EQ(ChooseSpreadPath(source.manifest, *plan, nvlink), SpreadPath::kStaged);
  // Parallel links that scale, a slow fabric: every device reads for itself.
  SpreadBandwidths pcie{.host_to_device = 25e9, .host_to_devices_parallel = 100e9,
                        .device_to_device = 10e9};
  EXPECT_EQ(ChooseSpreadPath(source.manifest, *plan, pcie), SpreadPath::kPerDevice);
  // One device: nothing to spread.
  auto single = MakeLoadPlan(source.manifest, 1, {});
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(ChooseSpreadPath(source.manifest, *single, nvlink), SpreadPath::kPerDevice);
  EXPECT_LT(EstimateStagedSeconds(t, nvlink), EstimatePerDeviceSeconds(t, nvlink));
}

}  // namespace
}  // namespace loadstar::loader
