// CopyReplica (loader/replica.h): a replica copied device-to-device is byte-identical to
// its source (padding included), under every placement and quantization, on other
// devices or the same ones, shares no memory with it, and frees everything on failure.
#include "loader/replica.h"

#include <memory>

#include "gtest/gtest.h"
#include "loader/host_communicator.h"
#include "loader/host_device.h"
#include "loader/quantized_load.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/quant_test_util.h"

namespace loadstar::loader {
namespace {

using loader::testing::AllocationBytes;

using loadstar::testing::QuantConfigOf;
using testing::TestStore;
using testing::TinyLlama;

struct Devices {
  explicit Devices(int n, uint64_t bytes = 1ull << 30) {
    for (int d = 0; d < n; ++d) {
      owned.push_back(std::make_unique<HostDevice>(d, bytes));
      all.push_back(owned.back().get());
    }
  }
  std::vector<Device*> Range(int first, int n) const {
    return {all.begin() + first, all.begin() + first + n};
  }
  std::vector<std::unique_ptr<HostDevice>> owned;
  std::vector<Device*> all;
};

struct Case {
  Placement placement;
  int devices;
  quant::QuantType type;
};

class ReplicaCopyTest : public ::testing::TestWithParam<Case> {};

TEST_P(ReplicaCopyTest, ByteIdenticalAndOwnMemory) {
  const Case c = GetParam();
  TestStore ts;
  ts.Save(TinyLlama(2, 128, 256), "m");
  Devices devices(2 * c.devices);  // source on the first half, replica on the second
  auto comm = HostCommunicator::Create(devices.all);
  ASSERT_TRUE(comm.ok());
  LoadPipeline::Options po;
  po.chunk_bytes = 8192;
  po.ring_bytes = 1 << 20;
  auto pipeline = LoadPipeline::Create(po);
  ASSERT_TRUE(pipeline.ok());
  PlanOptions plan;
  plan.placement = c.devices > 1 ? c.placement : Placement::kSingle;
  auto source = LoadQuantized(**pipeline, ts.store(), "m", QuantConfigOf(c.type),
                              devices.Range(0, c.devices), plan);
  ASSERT_TRUE(source.ok()) << source.status();
  std::vector<int> src_ranks, dst_ranks, same_ranks;
  for (int d = 0; d < c.devices; ++d) {
    src_ranks.push_back(d);
    dst_ranks.push_back(c.devices + d);
  }
  ReplicaCopyStats stats;
  // 4 KiB pieces: many Copy calls per allocation.
  auto replica = CopyReplica(*source->model, devices.Range(c.devices, c.devices), src_ranks,
                             dst_ranks, **comm, nullptr, &stats, 4096);
  ASSERT_TRUE(replica.ok()) << replica.status();
  // On the same devices too (a device-local copy).
  auto local = CopyReplica(*source->model, devices.Range(0, c.devices), src_ranks, src_ranks,
                           **comm);
  ASSERT_TRUE(local.ok()) << local.status();
  uint64_t total = 0;
  for (int d = 0; d < c.devices; ++d) {
    const std::string src = AllocationBytes(*source->model, d);
    total += src.size();
    EXPECT_TRUE(AllocationBytes(**replica, d) == src) << "device " << d;
    EXPECT_TRUE(AllocationBytes(**local, d) == src) << "device " << d;
    EXPECT_NE((*replica)->allocation(d).ptr, source->model->allocation(d).ptr);
    EXPECT_NE((*local)->allocation(d).ptr, source->model->allocation(d).ptr);
    EXPECT_EQ((*replica)->device(d)->name(), "host:" + std::to_string(c.devices + d));
  }
  EXPECT_EQ(stats.bytes, total);
  ASSERT_EQ((*replica)->tensors().size(), source->model->tensors().size());
  for (size_t i = 0; i < (*replica)->tensors().size(); ++i) {
    const LoadedTensor& a = source->model->tensors()[i];
    const LoadedTensor& b = (*replica)->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.device, b.device);
    EXPECT_EQ(a.offset, b.offset);
    EXPECT_EQ(a.transform_info, b.transform_info);
  }
  // Independent: freeing the source leaves the replica whole.
  const std::string before = AllocationBytes(**replica, 0);
  ASSERT_TRUE(source->model->Free().ok());
  EXPECT_TRUE(AllocationBytes(**replica, 0) == before);
}

INSTANTIATE_TEST_SUITE_P(
    Placements, ReplicaCopyTest,
    ::testing::Values(Case{Placement::kSingle, 1, quant::QuantType::kNone},
                      Case{Placement::kSingle, 1, quant::QuantType::kNf4},
                      Case{Placement::kAuto, 2, quant::QuantType::kInt8},
                      Case{Placement::kTensorParallel, 2, quant::QuantType::kNone},
                      Case{Placement::kTensorParallel, 2, quant::QuantType::kNf4},
                      Case{Placement::kTensorParallel, 4, quant::QuantType::kInt8}),
    [](const ::testing::TestParamInfo<Case>& info) {
      const Case& c = info.param;
      const char* placement = c.placement == Placement::kSingle ? "Single"
                              : c.placement == Placement::kAuto ? "Auto"
                                                                : "TensorParallel";
      return std::string(placement) + std::to_string(c.devices) + "_" +
             std::string(quant::QuantTypeName(c.type));
    });

TEST(ReplicaCopyTest, FailuresFreeEverything) {
  TestStore ts;
  ModelSource model = ts.Save(TinyLlama(1, 64, 64), "m");
  Devices devices(2);
  Devices small(1, 4096);  // too small for the replica
  auto comm = HostCommunicator::Create(devices.all);
  ASSERT_TRUE(comm.ok());
  auto pipeline = LoadPipeline::Create({});
  ASSERT_TRUE(pipeline.ok());
  auto source = (*pipeline)->Load(model, {devices.all[0]}, {});
  ASSERT_TRUE(source.ok()) << source.status();
  // No room.
  auto full = CopyReplica(**source, {small.all[0]}, {0}, {1}, **comm);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  // A rank the communicator does not have: the copy fails after allocating; freed.
  auto bad = CopyReplica(**source, {devices.all[1]}, {0}, {7}, **comm);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_EQ(devices.owned[1]->free_memory(), devices.owned[1]->total_memory());
  // Cancelled before the first piece.
  CancellationToken cancel;
  cancel.Cancel();
  auto cancelled = CopyReplica(**source, {devices.all[1]}, {0}, {1}, **comm, &cancel);
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(devices.owned[1]->free_memory(), devices.owned[1]->total_memory());
  // A device list that does not match the source.
  EXPECT_EQ(CopyReplica(**source, devices.all, {0, 1}, {0, 1}, **comm).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loadstar::loader
