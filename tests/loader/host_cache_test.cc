#include "loader/host_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "loader/host_device.h"
#include "loader/load_pipeline.h"
#include "tests/loader/loader_test_util.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::CheckpointBuilder;
using testing::TestStore;
using testing::TinyLlama;

class HostCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 4; ++i) {
      builders_.push_back(TinyLlama(2, 64, 64, /*seed=*/i + 1));
      sources_.push_back(store_.Save(builders_.back(), "m" + std::to_string(i)));
    }
    auto plan = MakeLoadPlan(sources_[0].manifest, 1, PlanOptions{});
    ASSERT_TRUE(plan.ok());
    entry_bytes_ = plan->device_bytes[0];
  }

  std::unique_ptr<LoadPipeline> Pipeline(HostCache* cache) {
    LoadPipeline::Options options;
    options.cache = cache;
    auto p = LoadPipeline::Create(options);
    EXPECT_TRUE(p.ok());
    return *std::move(p);
  }

  TestStore store_;
  std::vector<CheckpointBuilder> builders_;
  std::vector<ModelSource> sources_;
  uint64_t entry_bytes_ = 0;
};

TEST_F(HostCacheTest, EvictsLeastRecentlyUsedFirst) {
  HostCache cache({3 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cache.Prefetch(sources_[i], *pipeline).ok());
  EXPECT_EQ(cache.Keys(), (std::vector<std::string>{"m2", "m1", "m0"}));
  EXPECT_EQ(cache.used_bytes(), 3 * entry_bytes_);
  // Touch m0: m1 becomes the least recently used.
  ASSERT_TRUE(cache.Lookup("m0").has_value());
  ASSERT_TRUE(cache.Prefetch(sources_[3], *pipeline).ok());
  EXPECT_EQ(cache.Keys(), (std::vector<std::string>{"m3", "m0", "m2"}));
  EXPECT_FALSE(cache.Contains("m1"));
  // Prefetching a cached model is a no-op that refreshes it.
  ASSERT_TRUE(cache.Prefetch(sources_[2], *pipeline).ok());
  EXPECT_EQ(cache.Keys().front(), "m2");
  ASSERT_TRUE(cache.Evict("m0").ok());
  EXPECT_EQ(cache.Evict("m0").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache.used_bytes(), 2 * entry_bytes_);
}

TEST_F(HostCacheTest, PinnedEntriesAreNeverEvicted) {
  HostCache cache({2 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  ASSERT_TRUE(cache.Prefetch(sources_[0], *pipeline).ok());
  ASSERT_TRUE(cache.Prefetch(sources_[1], *pipeline).ok());
  {
    auto pin0 = cache.Lookup("m0");
    auto pin1 = cache.Lookup("m1");
    ASSERT_TRUE(pin0 && pin1);
    EXPECT_EQ(cache.Evict("m0").code(), absl::StatusCode::kFailedPrecondition);
    absl::Status full = cache.Prefetch(sources_[2], *pipeline);
    EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(cache.Contains("m0") && cache.Contains("m1"));
    // Pinned data stays readable and correct.
    const store::ManifestTensor& t = sources_[0].manifest.tensors[3];
    EXPECT_EQ(std::string(pin0->TensorData(3), t.size), builders_[0].Bytes(t.name));
  }
  // Unpinned now: m0 (least recent) makes way.
  ASSERT_TRUE(cache.Prefetch(sources_[2], *pipeline).ok());
  EXPECT_FALSE(cache.Contains("m0"));
  EXPECT_TRUE(cache.Contains("m1"));
}

TEST_F(HostCacheTest, LoadFromCacheSkipsTheDisk) {
  HostCache cache({4 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  ASSERT_TRUE(cache.Prefetch(sources_[0], *pipeline).ok());
  // Corrupt the file on disk: a cached load must not read it (verified at insert).
  const store::ManifestTensor& t = sources_[0].manifest.tensors[1];
  int fd = ::open(sources_[0].file_paths[t.file].c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char zero[64] = {};
  ASSERT_EQ(::pwrite(fd, zero, sizeof zero, t.offset), 64);
  ::close(fd);

  HostDevice device(0, 1ull << 30);
  LoadStats stats;
  auto model = pipeline->Load(sources_[0], {&device}, PlanOptions{}, nullptr, {}, &stats);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(stats.from_cache);
  EXPECT_EQ(stats.io, "cache");
  for (const auto& bt : builders_[0].tensors()) {
    EXPECT_TRUE(*(*model)->ReadTensor(*(*model)->Find(bt.name)) == bt.bytes) << bt.name;
  }
  // Evicted: the load goes to disk and finds the corruption.
  (*model).reset();
  ASSERT_TRUE(cache.Evict("m0").ok());
  auto again = pipeline->Load(sources_[0], {&device}, PlanOptions{});
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(HostCacheTest, CorruptModelIsNotCached) {
  const store::ManifestTensor& t = sources_[1].manifest.tensors[2];
  int fd = ::open(sources_[1].file_paths[t.file].c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_EQ(::pwrite(fd, junk, sizeof junk, t.offset), 8);
  ::close(fd);
  HostCache cache({4 * entry_bytes_, nullptr});
  auto pipeline = Pipeline(&cache);
  absl::Status s = cache.Prefetch(sources_[1], *pipeline);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(cache.Contains("m1"));
  EXPECT_EQ(cache.used_bytes(), 0u);
}

TEST_F(HostCacheTest, TooBigForCapacity) {
  HostCache cache({entry_bytes_ / 2, nullptr});
  auto pipeline = Pipeline(&cache);
  EXPECT_EQ(cache.Prefetch(sources_[0], *pipeline).code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace loadstar::loader
