#include "loader/load_pipeline.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "loader/host_device.h"
#include "loader/tensor_transform.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/small_shm.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::CheckpointBuilder;
using testing::TestStore;
using testing::TinyLlama;

std::unique_ptr<LoadPipeline> MakePipeline(LoadPipeline::Options options = {}) {
  auto p = LoadPipeline::Create(options);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

void ExpectSameBytes(const LoadedModel& model, const CheckpointBuilder& builder) {
  ASSERT_EQ(model.tensors().size(), builder.tensors().size());
  for (const auto& bt : builder.tensors()) {
    const LoadedTensor* t = model.Find(bt.name);
    ASSERT_NE(t, nullptr) << bt.name;
    EXPECT_EQ(t->dtype, bt.dtype) << bt.name;
    EXPECT_EQ(t->shape, bt.shape) << bt.name;
    auto bytes = model.ReadTensor(*t);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_TRUE(*bytes == bt.bytes) << "bytes differ: " << bt.name;
  }
}

struct PipelineConfig {
  const char* name;
  IoMode mode;
  bool in_place;
  const char* engine;
  uint64_t chunk;
};

class RoundTripTest : public ::testing::TestWithParam<PipelineConfig> {};

// Build checkpoint -> store save -> load: every tensor's bytes equal, in every I/O mode,
// in place and through the ring, including a tensor spanning several checksum chunks.
TEST_P(RoundTripTest, EveryTensorMatches) {
  const PipelineConfig& c = GetParam();
  TestStore store;
  CheckpointBuilder builder = TinyLlama(3, 64, 100);
  // 2 checksum pieces + an odd tail: 64 MiB + 4 KiB + 6 bytes.
  builder.Add("big.weight", DType::kU8, {static_cast<int64_t>((64ull << 20) + 4096 + 6)});
  builder.Add("model.odd.bias", DType::kF16, {3});
  builder.Shards(2);
  ModelSource source = store.Save(builder, "tiny");
  ASSERT_EQ(source.file_paths.size(), 2u);

  LoadPipeline::Options options;
  options.io_mode = c.mode;
  options.in_place_reads = c.in_place;
  options.io.kind = c.engine;
  options.chunk_bytes = c.chunk;
  options.threads = 3;
  auto pipeline = MakePipeline(options);
  HostDevice device(0, 1ull << 30);
  LoadStats stats;
  std::vector<LoadProgress> progress;
  auto model = pipeline->Load(source, {&device}, PlanOptions{}, nullptr,
                              [&](const LoadProgress& p) { progress.push_back(p); }, &stats);
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectSameBytes(**model, builder);
  EXPECT_EQ(stats.bytes, source.manifest.TotalBytes());
  EXPECT_EQ(stats.tensors, static_cast<int>(builder.tensors().size()));
  EXPECT_FALSE(stats.from_cache);
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().bytes, stats.bytes);
  EXPECT_EQ(progress.back().tensors, stats.tensors);
  ASSERT_TRUE((*model)->Free().ok());
  EXPECT_EQ(device.live_allocations(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, RoundTripTest,
    ::testing::Values(
        PipelineConfig{"direct_uring", IoMode::kDirect, false, "io_uring", 4 << 20},
        PipelineConfig{"direct_uring_in_place", IoMode::kDirect, true, "io_uring", 1 << 20},
        PipelineConfig{"direct_pread", IoMode::kDirect, false, "pread", 4 << 20},
        PipelineConfig{"buffered", IoMode::kBuffered, false, "io_uring", 256 << 10},
        PipelineConfig{"buffered_in_place", IoMode::kBuffered, true, "io_uring", 4 << 20},
        PipelineConfig{"auto", IoMode::kAuto, false, "io_uring", 4 << 20}),
    [](const auto& info) { return std::string(info.param.name); });

// A ring of two 16 KiB slots streams a model many times its size.
TEST(LoadPipelineTest, RingSmallerThanModel) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(4, 128, 256);
  ModelSource source = store.Save(builder, "tiny");
  ASSERT_GT(source.manifest.TotalBytes(), 20u * 32768);
  for (IoMode mode : {IoMode::kDirect, IoMode::kBuffered}) {
    LoadPipeline::Options options;
    options.io_mode = mode;
    options.chunk_bytes = 16 << 10;
    options.ring_bytes = 32 << 10;
    options.threads = 4;  // more workers than slots
    auto pipeline = MakePipeline(options);
    ASSERT_EQ(pipeline->ring().slot_count(), 2);
    HostDevice device(0, 1ull << 30);
    auto model = pipeline->Load(source, {&device}, PlanOptions{});
    ASSERT_TRUE(model.ok()) << model.status();
    ExpectSameBytes(**model, builder);
    EXPECT_EQ(pipeline->ring().free_slots(), 2);
  }
}

// Files without an OS descriptor go through RandomAccessFile::Read; same bytes.
TEST(LoadPipelineTest, PreadFallbackMatchesUring) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(2, 96, 64);
  ModelSource source = store.Save(builder, "tiny");
  HostDevice device(0, 1ull << 30);

  LoadPipeline::Options uring_options;
  uring_options.io_mode = IoMode::kDirect;
  auto uring = MakePipeline(uring_options);
  LoadStats uring_stats;
  auto a = uring->Load(source, {&device}, PlanOptions{}, nullptr, {}, &uring_stats);
  ASSERT_TRUE(a.ok()) << a.status();

  testing::NoFdEnv env(Env::Default());
  LoadPipeline::Options fallback_options;
  fallback_options.env = &env;
  fallback_options.io_mode = IoMode::kDirect;
  auto fallback = MakePipeline(fallback_options);
  auto b = fallback->Load(source, {&device}, PlanOptions{});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_GT(env.opened(), 0);

  ASSERT_EQ((*a)->tensors().size(), (*b)->tensors().size());
  for (size_t i = 0; i < (*a)->tensors().size(); ++i) {
    auto x = (*a)->ReadTensor((*a)->tensors()[i]);
    auto y = (*b)->ReadTensor((*b)->tensors()[i]);
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_TRUE(*x == *y) << (*a)->tensors()[i].name;
  }
  ExpectSameBytes(**b, builder);
}

TEST(LoadPipelineTest, ChecksumMismatchIsDataLossNamingTensorAndFile) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(2, 64, 64);
  ModelSource source = store.Save(builder, "tiny");
  const store::ManifestTensor* victim =
      source.manifest.Find("model.layers.1.self_attn.v_proj.weight");
  ASSERT_NE(victim, nullptr);
  const std::string& path = source.file_paths[victim->file];
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char byte;
  ASSERT_EQ(::pread(fd, &byte, 1, victim->offset + 100), 1);
  byte ^= 0x40;
  ASSERT_EQ(::pwrite(fd, &byte, 1, victim->offset + 100), 1);
  ::fsync(fd);
  ::close(fd);

  for (bool in_place : {false, true}) {
    for (IoMode mode : {IoMode::kDirect, IoMode::kBuffered}) {
      LoadPipeline::Options options;
      options.io_mode = mode;
      options.in_place_reads = in_place;
      auto pipeline = MakePipeline(options);
      HostDevice device(0, 1ull << 30);
      auto model = pipeline->Load(source, {&device}, PlanOptions{});
      ASSERT_FALSE(model.ok());
      EXPECT_EQ(model.status().code(), absl::StatusCode::kDataLoss);
      std::string msg(model.status().message());
      EXPECT_NE(msg.find(victim->name), std::string::npos) << msg;
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_EQ(device.live_allocations(), 0) << "nothing half-loaded survives";
    }
  }
}

// A model larger than /dev/shm, loaded buffered into a fresh host device (read in place,
// each chunk's pages populated first) and through the ring (O_DIRECT, the device's copy):
// RESOURCE_EXHAUSTED naming the device, nothing half-loaded, no SIGBUS.
TEST(LoadPipelineTest, FullShmFailsTheLoadAsResourceExhausted) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(2, 256, 4096);  // ~10 MiB
  ModelSource source = store.Save(builder, "tiny");
  loadstar::testing::SmallShmResult r = loadstar::testing::RunWithSmallShm(2 << 20, [&]() -> std::string {
    for (IoMode mode : {IoMode::kBuffered, IoMode::kDirect}) {
      LoadPipeline::Options options;
      options.io_mode = mode;
      auto pipeline = MakePipeline(options);
      HostDevice device(0, 1ull << 30);
      auto model = pipeline->Load(source, {&device}, PlanOptions{});
      const std::string how = mode == IoMode::kBuffered ? "buffered: " : "direct: ";
      if (model.ok()) return how + "loaded into a full /dev/shm";
      if (model.status().code() != absl::StatusCode::kResourceExhausted ||
          std::string(model.status().message()).find("host:0") == std::string::npos) {
        return how + model.status().ToString();
      }
      if (device.live_allocations() != 0) return how + "allocations left";
    }
    return "";
  });
  if (r.namespace_unavailable) GTEST_SKIP() << "cannot mount a small tmpfs over /dev/shm here";
  EXPECT_EQ(r.signal, 0) << "the child died of signal " << r.signal;
  EXPECT_EQ(r.failure, "");
}

TEST(LoadPipelineTest, CancelMidLoadFreesEverything) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(8, 256, 512);
  ModelSource source = store.Save(builder, "tiny");
  LoadPipeline::Options options;
  options.chunk_bytes = 64 << 10;
  options.threads = 2;
  auto pipeline = MakePipeline(options);
  HostDevice d0(0, 1ull << 30), d1(1, 1ull << 30);
  CancellationToken cancel;
  uint64_t seen = 0;
  PlanOptions plan;
  plan.placement = Placement::kAuto;
  auto model = pipeline->Load(source, {&d0, &d1}, plan, &cancel, [&](const LoadProgress& p) {
    seen = p.bytes;
    cancel.Cancel();
  });
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(seen, source.manifest.TotalBytes());
  EXPECT_EQ(d0.live_allocations(), 0);
  EXPECT_EQ(d1.live_allocations(), 0);
  EXPECT_EQ(pipeline->ring().free_slots(), pipeline->ring().slot_count());
}

TEST(LoadPipelineTest, AutoPlacementOverHostDevices) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(6, 128, 256);
  ModelSource source = store.Save(builder, "tiny");
  auto created = CreateDevices("host:3", 1ull << 30);
  ASSERT_TRUE(created.ok());
  std::vector<Device*> devices;
  for (auto& d : *created) devices.push_back(d.get());
  auto pipeline = MakePipeline();
  PlanOptions plan;
  plan.placement = Placement::kAuto;
  auto single = MakeLoadPlan(source.manifest, 1, PlanOptions{});
  ASSERT_TRUE(single.ok());
  plan.max_memory = {single->device_bytes[0] / 2, single->device_bytes[0] / 2,
                     single->device_bytes[0] / 2};
  auto model = pipeline->Load(source, devices, plan);
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectSameBytes(**model, builder);
  std::set<int> used;
  for (const LoadedTensor& t : (*model)->tensors()) used.insert(t.device);
  EXPECT_EQ(used.size(), 3u);
  for (int d = 0; d < 3; ++d) {
    EXPECT_LE((*model)->allocation(d).size, plan.max_memory[d]);
  }
  auto handles = (*model)->Export();
  ASSERT_TRUE(handles.ok());
  EXPECT_EQ(handles->size(), 3u);
}

TEST(LoadPipelineTest, TensorParallelShardsHoldTheRightBytes) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(1, 64, 128);
  ModelSource source = store.Save(builder, "tiny");
  HostDevice d0(0, 1ull << 30), d1(1, 1ull << 30);
  LoadPipeline::Options options;
  options.chunk_bytes = 4096;  // chunks cut rows in the middle
  auto pipeline = MakePipeline(options);
  PlanOptions plan;
  plan.placement = Placement::kTensorParallel;
  auto model = pipeline->Load(source, {&d0, &d1}, plan);
  ASSERT_TRUE(model.ok()) << model.status();
  std::map<std::string, std::vector<std::string>> shards;
  for (const LoadedTensor& t : (*model)->tensors()) {
    shards[t.name].push_back(*(*model)->ReadTensor(t));
  }
  // Rows: the concatenation of the shards.
  const std::string& q = builder.Bytes("model.layers.0.self_attn.q_proj.weight");
  auto& qs = shards["model.layers.0.self_attn.q_proj.weight"];
  EXPECT_TRUE(qs[0] + qs[1] == q);
  // Columns: each row split in halves.
  const std::string& o = builder.Bytes("model.layers.0.self_attn.o_proj.weight");
  auto& os = shards["model.layers.0.self_attn.o_proj.weight"];
  const size_t row = 64 * 2, half = row / 2;
  ASSERT_EQ(os[0].size(), o.size() / 2);
  for (size_t r = 0; r < 64; ++r) {
    EXPECT_EQ(os[0].substr(r * half, half), o.substr(r * row, half)) << r;
    EXPECT_EQ(os[1].substr(r * half, half), o.substr(r * row + half, half)) << r;
  }
  // Replicated.
  const std::string& n = builder.Bytes("model.norm.weight");
  EXPECT_TRUE(shards["model.norm.weight"][0] == n && shards["model.norm.weight"][1] == n);
}

// A transform that keeps the high byte of every fp16 element: output half the size. It
// checks that chunks arrive in order and hold whole elements.
class HighByteTransform : public TransformProvider {
 public:
  std::optional<TransformedTensor> Plan(const store::ManifestTensor& t) override {
    if (t.dtype != DType::kF16) return std::nullopt;
    return TransformedTensor{DType::kU8, t.shape, t.size / 2, "{\"high_byte\":true}"};
  }
  absl::StatusOr<std::unique_ptr<TensorTransform>> Begin(
      const store::ManifestTensor& t, const TransformedTensor& out) override {
    ++begun;
    return std::unique_ptr<TensorTransform>(new Impl(t.size));
  }
  std::atomic<int> begun{0};

 private:
  class Impl : public TensorTransform {
   public:
    explicit Impl(uint64_t size) : size_(size) {}
    absl::Status Consume(const char* data, uint64_t bytes, OutputWriter& out) override {
      if (bytes % 2 != 0) return absl::InternalError("partial element");
      std::string high(bytes / 2, '\0');
      for (uint64_t i = 0; i < bytes / 2; ++i) high[i] = data[2 * i + 1];
      absl::Status s = out.Write(seen_ / 2, high.data(), high.size());
      seen_ += bytes;
      return s;
    }
    absl::Status Finish(OutputWriter& out) override {
      return seen_ == size_ ? absl::OkStatus() : absl::InternalError("missing bytes");
    }

   private:
    uint64_t size_;
    uint64_t seen_ = 0;
  };
};

TEST(LoadPipelineTest, TransformHookSeesChunksInOrder) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(2, 128, 256);
  ModelSource source = store.Save(builder, "tiny");
  LoadPipeline::Options options;
  options.chunk_bytes = 8192;
  auto pipeline = MakePipeline(options);
  HostDevice device(0, 1ull << 30);
  HighByteTransform transform;
  PlanOptions plan;
  plan.transform = &transform;
  auto model = pipeline->Load(source, {&device}, plan);
  ASSERT_TRUE(model.ok()) << model.status();
  int transformed = 0;
  for (const auto& bt : builder.tensors()) {
    const LoadedTensor* t = (*model)->Find(bt.name);
    std::string bytes = *(*model)->ReadTensor(*t);
    if (bt.dtype == DType::kF16) {
      ++transformed;
      EXPECT_EQ(t->dtype, DType::kU8);
      EXPECT_EQ(t->transform_info, "{\"high_byte\":true}");
      ASSERT_EQ(bytes.size(), bt.bytes.size() / 2);
      for (size_t i = 0; i < bytes.size(); ++i) {
        ASSERT_EQ(bytes[i], bt.bytes[2 * i + 1]) << bt.name << " " << i;
      }
    } else {
      EXPECT_TRUE(bytes == bt.bytes) << bt.name;
    }
  }
  EXPECT_EQ(transform.begun, transformed);
}

// Reloading onto a device that kept the memory of the previous load reads in place.
TEST(LoadPipelineTest, ReloadIntoRetainedMemory) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(3, 128, 128);
  ModelSource source = store.Save(builder, "tiny");
  HostDevice device(0, 1ull << 30, /*retain_bytes=*/1ull << 30);
  for (IoMode mode : {IoMode::kBuffered, IoMode::kDirect}) {
    LoadPipeline::Options options;
    options.io_mode = mode;
    auto pipeline = MakePipeline(options);
    for (int i = 0; i < 3; ++i) {
      auto model = pipeline->Load(source, {&device}, PlanOptions{});
      ASSERT_TRUE(model.ok()) << model.status();
      EXPECT_EQ(device.ReadsInPlace((*model)->allocation(0)), i > 0 || mode == IoMode::kDirect);
      ExpectSameBytes(**model, builder);
    }
  }
  EXPECT_GT(device.retained_bytes(), 0u);
}

TEST(LoadPipelineTest, DeviceTooSmallIsResourceExhausted) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(2, 64, 64);
  ModelSource source = store.Save(builder, "tiny");
  auto pipeline = MakePipeline();
  HostDevice device(0, 64 << 10);
  auto model = pipeline->Load(source, {&device}, PlanOptions{});
  EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(device.live_allocations(), 0);
}

TEST(LoadPipelineTest, ColdLoadAfterDroppingPageCache) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(2, 128, 128);
  ModelSource source = store.Save(builder, "tiny");
  ASSERT_TRUE(DropFromPageCache(source).ok());
  EXPECT_LT(PageCacheResidency(source.file_paths[0]), 0.5);
  auto pipeline = MakePipeline();  // kAuto: picks O_DIRECT for a cold file
  HostDevice device(0, 1ull << 30);
  LoadStats stats;
  auto model = pipeline->Load(source, {&device}, PlanOptions{}, nullptr, {}, &stats);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_NE(stats.io.find("direct"), std::string::npos) << stats.io;
  ExpectSameBytes(**model, builder);
}

}  // namespace
}  // namespace loadstar::loader
