// Admission (loader/load_pipeline.h, loader/host_cache.h): a load that reads a model from
// disk leaves its verified bytes in the host cache, so the next load copies from DRAM.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "loader/host_cache.h"
#include "loader/host_device.h"
#include "loader/load_pipeline.h"
#include "loader/quantized_load.h"
#include "store/quantized_artifact.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/quant_test_util.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::CheckpointBuilder;
using loadstar::testing::QuantConfigOf;
using testing::TestStore;
using testing::TinyLlama;

// Overwrites `bytes` bytes of tensor `index`'s data on disk.
void CorruptOnDisk(const ModelSource& source, int index, const std::string& bytes) {
  const store::ManifestTensor& t = source.manifest.tensors[index];
  int fd = ::open(source.file_paths[t.file].c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(t.offset)),
            static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// Files whose reads wait until Open() is called; counts the files opened.
class GatedEnv : public EnvWrapper {
 public:
  explicit GatedEnv(Env* target) : EnvWrapper(target) {}
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path, const OpenOptions& options) override {
    auto file = target()->NewRandomAccessFile(path, options);
    if (!file.ok()) return file.status();
    ++opened_;
    return std::unique_ptr<RandomAccessFile>(new File(*std::move(file), &gate_));
  }
  void Open() { gate_.Notify(); }
  int opened() const { return opened_; }

 private:
  class File : public RandomAccessFile {
   public:
    File(std::unique_ptr<RandomAccessFile> base, absl::Notification* gate)
        : RandomAccessFile(base->path()), base_(std::move(base)), gate_(gate) {}
    absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* dst) const override {
      gate_->WaitForNotification();
      return base_->Read(offset, n, dst);
    }
    uint64_t Size() const override { return base_->Size(); }
    bool direct() const override { return base_->direct(); }

   private:
    std::unique_ptr<RandomAccessFile> base_;
    absl::Notification* gate_;
  };
  absl::Notification gate_;
  std::atomic<int> opened_{0};
};

class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 4; ++i) {
      builders_.push_back(TinyLlama(2, 64, 64, /*seed=*/i + 11));
      sources_.push_back(store_.Save(builders_.back(), "m" + std::to_string(i)));
    }
    auto plan = MakeLoadPlan(sources_[0].manifest, 1, PlanOptions{});
    ASSERT_TRUE(plan.ok());
    entry_bytes_ = plan->device_bytes[0];
  }

  // Small chunks: every tensor is several chunks, several workers fill the entry.
  std::unique_ptr<LoadPipeline> Pipeline(HostCache* cache, IoMode mode = IoMode::kAuto) {
    LoadPipeline::Options options;
    options.cache = cache;
    options.chunk_bytes = 4096;
    options.ring_bytes = 64 << 10;
    options.threads = 3;
    options.io_mode = mode;
    auto p = LoadPipeline::Create(options);
    EXPECT_TRUE(p.ok()) << p.status();
    return *std::move(p);
  }

  // Every tensor of the cached entry `key` equals the store's bytes of model `i`.
  void ExpectCachedBytes(HostCache& cache, int i) {
    auto handle = cache.Lookup(sources_[i].key);
    ASSERT_TRUE(handle.has_value()) << sources_[i].key;
    const auto& tensors = sources_[i].manifest.tensors;
    for (size_t k = 0; k < tensors.size(); ++k) {
      EXPECT_TRUE(std::string(handle->TensorData(static_cast<int>(k)), tensors[k].size) ==
                  builders_[i].Bytes(tensors[k].name))
          << tensors[k].name;
    }
  }

  absl::StatusOr<std::unique_ptr<LoadedModel>> LoadOne(LoadPipeline& pipeline, int i,
                                                       LoadStats* stats,
                                                       PlanOptions plan = {}) {
    return pipeline.Load(sources_[i], {&device_}, plan, nullptr, {}, stats);
  }

  TestStore store_;
  std::vector<CheckpointBuilder> builders_;
  std::vector<ModelSource> sources_;
  uint64_t entry_bytes_ = 0;
  HostDevice device_{0, 1ull << 30};
};

TEST_F(AdmissionTest, DiskLoadIsAdmittedAndTheNextLoadCopiesFromTheCache) {
  for (IoMode mode : {IoMode::kDirect, IoMode::kBuffered}) {
    SCOPED_TRACE(mode == IoMode::kDirect ? "direct" : "buffered");
    HostCache cache({4 * entry_bytes_, nullptr});
    auto pipeline = Pipeline(&cache, mode);
    LoadStats first;
    auto model = LoadOne(*pipeline, 0, &first);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_FALSE(first.from_cache);
    EXPECT_TRUE(first.admitted);
    EXPECT_TRUE(cache.Contains("m0"));
    EXPECT_EQ(cache.Keys(), std::vector<std::string>{"m0"});
    EXPECT_EQ(cache.used_bytes(), entry_bytes_);
    ExpectCachedBytes(cache, 0);
    model->reset();

    // The second load reads nothing from disk: a corrupted file does not matter.
    CorruptOnDisk(sources_[0], 1, std::string(64, '\0'));
    LoadStats second;
    auto again = LoadOne(*pipeline, 0, &second);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_TRUE(second.from_cache);
    EXPECT_FALSE(second.admitted);
    EXPECT_EQ(second.io, "cache");
    for (const auto& bt : builders_[0].tensors()) {
      EXPECT_TRUE(*(*again)->ReadTensor(*(*again)->Find(bt.name)) == bt.bytes) << bt.name;
    }
    again->reset();
    // Restore the file for the next mode.
    const auto& t = sources_[0].manifest.tensors[1];
    CorruptOnDisk(sources_[0], 1, builders_[0].Bytes(t.name).substr(0, 64));
  }
}

TEST_F(AdmissionTest, ReadInPlaceIntoAHostDeviceIsCopiedIntoTheEntry) {
  HostCache cache({4 * entry_bytes_, nullptr});
  LoadPipeline::Options options;
  options.cache = &cache;
  options.in_place_reads = true;
  options.chunk_bytes = 4096;
  auto pipeline = LoadPipeline::Create(options);
  ASSERT_TRUE(pipeline.ok());
  LoadStats stats;
  auto model = (*pipeline)->Load(sources_[2], {&device_}, PlanOptions{}, nullptr, {}, &stats);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(stats.admitted);
  ExpectCachedBytes(cache, 2);
}

TEST_F(AdmissionTest, EntryIsInvisibleWhileLoadingAndPrefetchWaitsForIt) {
  HostCache cache({4 * entry_bytes_, nullptr});
  GatedEnv env(Env::Default());
  LoadPipeline::Options options;
  options.env = &env;
  options.cache = &cache;
  options.io_mode = IoMode::kBuffered;
  options.chunk_bytes = 4096;
  auto pipeline = LoadPipeline::Create(options);
  ASSERT_TRUE(pipeline.ok());
  LoadStats stats;
  absl::StatusOr<std::unique_ptr<LoadedModel>> model;
  std::thread load([&] {
    model = (*pipeline)->Load(sources_[0], {&device_}, PlanOptions{}, nullptr, {}, &stats);
  });
  // Reserved up front, but not visible until the load completes.
  for (int i = 0; i < 500 && cache.used_bytes() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ(cache.used_bytes(), entry_bytes_);
  EXPECT_FALSE(cache.Contains("m0"));
  EXPECT_FALSE(cache.Lookup("m0").has_value());
  EXPECT_TRUE(cache.Keys().empty());
  EXPECT_EQ(cache.Evict("m0").code(), absl::StatusCode::kNotFound);
  absl::Status prefetched = absl::UnknownError("not run");
  std::thread prefetch([&] { prefetched = cache.Prefetch(sources_[0], **pipeline); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  env.Open();
  load.join();
  prefetch.join();
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(stats.admitted);
  EXPECT_TRUE(prefetched.ok()) << prefetched;
  // The Prefetch found the admitted entry: the files were opened by one load only.
  EXPECT_EQ(env.opened(), static_cast<int>(sources_[0].file_paths.size()));
  EXPECT_EQ(cache.used_bytes(), entry_bytes_);
  ExpectCachedBytes(cache, 0);
}

TEST_F(AdmissionTest, ChecksumMismatchAdmitsNothing) {
  CorruptOnDisk(sources_[1], 2, "\x01\x02\x03\x04\x05\x06\x07\x08");
  HostCache cache({4 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  LoadStats stats;
  auto model = LoadOne(*pipeline, 1, &stats);
  ASSERT_EQ(model.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(model.status().message()).find("checksum mismatch"), std::string::npos)
      << model.status();
  EXPECT_FALSE(cache.Contains("m1"));
  EXPECT_TRUE(cache.Keys().empty());
  EXPECT_EQ(cache.used_bytes(), 0u);
  // The reservation is gone: a Prefetch of it does not wait, and fails the same way.
  EXPECT_EQ(cache.Prefetch(sources_[1], *pipeline).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(cache.used_bytes(), 0u);
}

TEST_F(AdmissionTest, CancelledLoadAdmitsNothing) {
  HostCache cache({4 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  CancellationToken cancel;
  cancel.Cancel();
  auto model = pipeline->Load(sources_[0], {&device_}, PlanOptions{}, &cancel);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(cache.Contains("m0"));
  EXPECT_EQ(cache.used_bytes(), 0u);
}

TEST_F(AdmissionTest, TooSmallCacheLoadsWithoutAdmitting) {
  HostCache cache({entry_bytes_ / 2, nullptr});
  auto pipeline = Pipeline(&cache);
  LoadStats stats;
  auto model = LoadOne(*pipeline, 0, &stats);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE(stats.admitted);
  EXPECT_FALSE(cache.Contains("m0"));
  EXPECT_EQ(cache.used_bytes(), 0u);
  for (const auto& bt : builders_[0].tensors()) {
    EXPECT_TRUE(*(*model)->ReadTensor(*(*model)->Find(bt.name)) == bt.bytes) << bt.name;
  }
}

TEST_F(AdmissionTest, AdmissionEvictsTheLeastRecentlyUsedUnpinnedEntry) {
  HostCache cache({2 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  for (int i : {0, 1}) {
    LoadStats stats;
    ASSERT_TRUE(LoadOne(*pipeline, i, &stats).ok());
    EXPECT_TRUE(stats.admitted) << i;
  }
  EXPECT_EQ(cache.Keys(), (std::vector<std::string>{"m1", "m0"}));
  ASSERT_TRUE(cache.Lookup("m0").has_value());  // m1 is now the least recently used
  LoadStats stats;
  ASSERT_TRUE(LoadOne(*pipeline, 2, &stats).ok());
  EXPECT_TRUE(stats.admitted);
  EXPECT_EQ(cache.Keys(), (std::vector<std::string>{"m2", "m0"}));
  EXPECT_EQ(cache.used_bytes(), 2 * entry_bytes_);
  ExpectCachedBytes(cache, 2);
  ExpectCachedBytes(cache, 0);
}

TEST_F(AdmissionTest, PinnedEntriesAreNeverEvictedAndNothingIsEvictedInVain) {
  HostCache cache({2 * entry_bytes_ + entry_bytes_ / 2, nullptr});
  auto pipeline = Pipeline(&cache);
  ASSERT_TRUE(cache.Prefetch(sources_[0], *pipeline).ok());
  ASSERT_TRUE(cache.Prefetch(sources_[1], *pipeline).ok());
  {
    auto pin0 = cache.Lookup("m0");
    auto pin1 = cache.Lookup("m1");
    ASSERT_TRUE(pin0 && pin1);
    LoadStats stats;
    auto model = LoadOne(*pipeline, 2, &stats);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_FALSE(stats.admitted);
    EXPECT_EQ(cache.Keys(), (std::vector<std::string>{"m1", "m0"}));
    EXPECT_EQ(cache.used_bytes(), 2 * entry_bytes_);
  }
  {
    // Only m1 pinned: evicting m0 makes room.
    auto pin1 = cache.Lookup("m1");
    LoadStats stats;
    ASSERT_TRUE(LoadOne(*pipeline, 2, &stats).ok());
    EXPECT_TRUE(stats.admitted);
    EXPECT_EQ(cache.Keys(), (std::vector<std::string>{"m2", "m1"}));
  }
}

TEST_F(AdmissionTest, PrefetchEvictsNothingWhenItCannotFit) {
  HostCache cache({2 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  ASSERT_TRUE(cache.Prefetch(sources_[0], *pipeline).ok());
  ASSERT_TRUE(cache.Prefetch(sources_[1], *pipeline).ok());
  auto pin1 = cache.Lookup("m1");
  // Bigger than one entry, smaller than the cache: only evicting pinned m1 would make
  // room, so unpinned m0 must stay (it used to be evicted in vain).
  CheckpointBuilder big = TinyLlama(3, 64, 64, 99);
  ModelSource source = store_.Save(big, "big");
  auto plan = MakeLoadPlan(source.manifest, 1, PlanOptions{});
  ASSERT_TRUE(plan.ok());
  ASSERT_GT(plan->device_bytes[0], entry_bytes_);
  ASSERT_LT(plan->device_bytes[0], 2 * entry_bytes_);
  EXPECT_EQ(cache.Prefetch(source, *pipeline).code(), absl::StatusCode::kResourceExhausted);
  LoadStats stats;
  ASSERT_TRUE(pipeline->Load(source, {&device_}, PlanOptions{}, nullptr, {}, &stats).ok());
  EXPECT_FALSE(stats.admitted);
  EXPECT_TRUE(cache.Contains("m0"));
  EXPECT_EQ(cache.used_bytes(), 2 * entry_bytes_);
}

TEST_F(AdmissionTest, ConcurrentLoadsOfOneModelAdmitOnce) {
  HostCache cache({4 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  constexpr int kLoads = 6;
  std::vector<std::unique_ptr<HostDevice>> devices;
  for (int i = 0; i < kLoads; ++i) devices.push_back(std::make_unique<HostDevice>(i, 1ull << 30));
  std::vector<LoadStats> stats(kLoads);
  std::vector<absl::StatusOr<std::unique_ptr<LoadedModel>>> models(kLoads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kLoads; ++i) {
    threads.emplace_back([&, i] {
      models[i] = pipeline->Load(sources_[3], {devices[i].get()}, PlanOptions{}, nullptr, {},
                                 &stats[i]);
    });
  }
  for (auto& t : threads) t.join();
  int admitted = 0;
  for (int i = 0; i < kLoads; ++i) {
    ASSERT_TRUE(models[i].ok()) << models[i].status();
    admitted += stats[i].admitted ? 1 : 0;
    for (const auto& bt : builders_[3].tensors()) {
      EXPECT_TRUE(*(*models[i])->ReadTensor(*(*models[i])->Find(bt.name)) == bt.bytes);
    }
  }
  EXPECT_EQ(admitted, 1);
  EXPECT_EQ(cache.used_bytes(), entry_bytes_);
  ExpectCachedBytes(cache, 3);
}

TEST_F(AdmissionTest, AdmitToCacheOffLeavesTheCacheAlone) {
  HostCache cache({4 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  PlanOptions plan;
  plan.admit_to_cache = false;
  LoadStats stats;
  ASSERT_TRUE(LoadOne(*pipeline, 0, &stats, plan).ok());
  EXPECT_FALSE(stats.admitted);
  EXPECT_EQ(cache.used_bytes(), 0u);
}

TEST_F(AdmissionTest, TensorParallelLoadAdmitsTheWholeSourceTensors) {
  HostCache cache({4 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  HostDevice d1(1, 1ull << 30);
  PlanOptions plan;
  plan.placement = Placement::kTensorParallel;
  LoadStats stats;
  auto model = pipeline->Load(sources_[1], {&device_, &d1}, plan, nullptr, {}, &stats);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(stats.admitted);
  ExpectCachedBytes(cache, 1);
  // The shards of the next (cached) tensor-parallel load equal the disk load's.
  HostDevice e0(2, 1ull << 30), e1(3, 1ull << 30);
  LoadStats cached;
  auto again = pipeline->Load(sources_[1], {&e0, &e1}, plan, nullptr, {}, &cached);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(cached.from_cache);
  ASSERT_EQ((*again)->tensors().size(), (*model)->tensors().size());
  for (size_t k = 0; k < (*model)->tensors().size(); ++k) {
    EXPECT_TRUE(*(*again)->ReadTensor((*again)->tensors()[k]) ==
                *(*model)->ReadTensor((*model)->tensors()[k]));
  }
}

// Quantize while streaming: the cache holds the checkpoint's bytes (key = the model), and a
// later quantized load from the cache gives the same quantized bytes as the disk one.
TEST(AdmissionQuantizedTest, QuantizedLoadAdmitsTheCheckpointAndReusesIt) {
  TestStore ts;
  CheckpointBuilder builder = TinyLlama(2, 128, 200);
  ts.Save(builder, "org/llama");
  auto source = ModelSourceFromStore(ts.store(), "org/llama");
  ASSERT_TRUE(source.ok());
  auto plan = MakeLoadPlan(source->manifest, 1, PlanOptions{});
  ASSERT_TRUE(plan.ok());
  HostCache cache({2 * plan->device_bytes[0], nullptr});
  LoadPipeline::Options options;
  options.cache = &cache;
  options.chunk_bytes = 8192;
  options.threads = 2;
  auto pipeline = LoadPipeline::Create(options);
  ASSERT_TRUE(pipeline.ok());
  HostDevice device(0, 1ull << 30);
  const quant::QuantConfig nf4 = QuantConfigOf(quant::QuantType::kNf4);

  LoadStats first;
  auto disk = LoadQuantized(**pipeline, ts.store(), "org/llama", nf4, {&device}, {}, {},
                            nullptr, {}, &first);
  ASSERT_TRUE(disk.ok()) << disk.status();
  EXPECT_EQ(disk->source, "checkpoint");
  EXPECT_TRUE(first.admitted);
  EXPECT_EQ(cache.Keys(), std::vector<std::string>{"org/llama"});
  {
    auto handle = cache.Lookup("org/llama");
    ASSERT_TRUE(handle.has_value());
    for (size_t k = 0; k < source->manifest.tensors.size(); ++k) {
      const auto& t = source->manifest.tensors[k];
      EXPECT_TRUE(std::string(handle->TensorData(static_cast<int>(k)), t.size) ==
                  builder.Bytes(t.name))
          << t.name;
    }
  }

  LoadStats second;
  auto cached = LoadQuantized(**pipeline, ts.store(), "org/llama", nf4, {&device}, {}, {},
                              nullptr, {}, &second);
  ASSERT_TRUE(cached.ok()) << cached.status();
  EXPECT_TRUE(second.from_cache);
  ASSERT_EQ(cached->model->tensors().size(), disk->model->tensors().size());
  for (size_t k = 0; k < disk->model->tensors().size(); ++k) {
    const LoadedTensor& a = disk->model->tensors()[k];
    const LoadedTensor& b = cached->model->tensors()[k];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.transform_info, b.transform_info) << a.name;
    EXPECT_TRUE(*disk->model->ReadTensor(a) == *cached->model->ReadTensor(b)) << a.name;
  }
  // Unquantized, from the same entry: the store's bytes.
  LoadStats plain;
  auto none = LoadQuantized(**pipeline, ts.store(), "org/llama",
                            QuantConfigOf(quant::QuantType::kNone), {&device}, {}, {}, nullptr,
                            {}, &plain);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(plain.from_cache);
  for (const auto& bt : builder.tensors()) {
    EXPECT_TRUE(*none->model->ReadTensor(*none->model->Find(bt.name)) == bt.bytes) << bt.name;
  }
}

// A stored variant is read (and admitted) under its own key, name@variant.
TEST(AdmissionQuantizedTest, ArtifactLoadAdmitsTheVariantKey) {
  TestStore ts;
  CheckpointBuilder builder = TinyLlama(2, 128, 200);
  ts.Save(builder, "org/llama");
  const quant::QuantConfig nf4 = QuantConfigOf(quant::QuantType::kNf4);
  ASSERT_TRUE(store::SaveQuantizedVariant(ts.store(), "org/llama", nf4).ok());
  HostCache cache({64ull << 20, nullptr});
  LoadPipeline::Options options;
  options.cache = &cache;
  auto pipeline = LoadPipeline::Create(options);
  ASSERT_TRUE(pipeline.ok());
  HostDevice device(0, 1ull << 30);
  LoadStats first, second;
  auto disk = LoadQuantized(**pipeline, ts.store(), "org/llama", nf4, {&device}, {}, {},
                            nullptr, {}, &first);
  ASSERT_TRUE(disk.ok()) << disk.status();
  EXPECT_EQ(disk->source, "artifact");
  EXPECT_TRUE(first.admitted);
  const std::string key = ModelKey("org/llama", nf4.VariantKey());
  EXPECT_EQ(cache.Keys(), std::vector<std::string>{key});
  auto cached = LoadQuantized(**pipeline, ts.store(), "org/llama", nf4, {&device}, {}, {},
                              nullptr, {}, &second);
  ASSERT_TRUE(cached.ok()) << cached.status();
  EXPECT_TRUE(second.from_cache);
  for (size_t k = 0; k < disk->model->tensors().size(); ++k) {
    EXPECT_TRUE(*disk->model->ReadTensor(disk->model->tensors()[k]) ==
                *cached->model->ReadTensor(cached->model->tensors()[k]));
  }
}

}  // namespace
}  // namespace loadstar::loader
