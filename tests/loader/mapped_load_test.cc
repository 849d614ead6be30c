// Warm loads into resident memory read through kept mappings of the store files
// (loader/file_mappings.h): the mapping is reused while the file is the same, a changed,
// replaced or deleted file is mapped anew or unmapped, and every failure the pread path
// reports (checksum mismatch, a short file) is reported the same way, never a SIGBUS.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "loader/file_mappings.h"
#include "loader/host_device.h"
#include "loader/load_pipeline.h"
#include "tests/loader/loader_test_util.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::CheckpointBuilder;
using loadstar::testing::TempDir;
using testing::TestStore;
using testing::TinyLlama;

void WriteFile(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
}

std::unique_ptr<RandomAccessFile> Open(const std::string& path) {
  auto f = Env::Default()->NewRandomAccessFile(path);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *std::move(f) : nullptr;
}

TEST(FileMappingsTest, KeptWhileTheFileIsTheSame) {
  TempDir dir;
  const std::string path = dir.Join("a");
  WriteFile(path, std::string(10000, 'a'));
  FileMappings mappings(1 << 20);
  bool made = false;
  auto first = mappings.Acquire(*Open(path), &made);
  ASSERT_NE(first, nullptr);
  EXPECT_TRUE(made);
  EXPECT_EQ(first->size(), 10000u);
  EXPECT_EQ(std::string(first->data(), 3), "aaa");
  auto again = mappings.Acquire(*Open(path), &made);  // another open of the same file
  EXPECT_EQ(again.get(), first.get());
  EXPECT_FALSE(made);
  EXPECT_EQ(mappings.size(), 1u);
  EXPECT_EQ(mappings.mapped_bytes(), 10000u);
}

TEST(FileMappingsTest, AReplacedFileIsMappedAnewAndADeletedOneUnmapped) {
  TempDir dir;
  const std::string path = dir.Join("a");
  WriteFile(path, std::string(8192, 'a'));
  FileMappings mappings(1 << 20);
  bool made = false;
  auto old_mapping = mappings.Acquire(*Open(path), &made);
  ASSERT_NE(old_mapping, nullptr);
  // As a store save publishes: a new file renamed over the old path.
  WriteFile(dir.Join("b"), std::string(4096, 'b'));
  ASSERT_EQ(::rename(dir.Join("b").c_str(), path.c_str()), 0);
  auto fresh = mappings.Acquire(*Open(path), &made);
  ASSERT_NE(fresh, nullptr);
  EXPECT_TRUE(made);
  EXPECT_EQ(fresh->size(), 4096u);
  EXPECT_EQ(std::string(fresh->data(), 2), "bb");
  EXPECT_EQ(std::string(old_mapping->data(), 2), "aa");  // a holder keeps its own bytes
  EXPECT_EQ(mappings.size(), 1u);
  EXPECT_EQ(mappings.mapped_bytes(), 4096u);
  ASSERT_EQ(::unlink(path.c_str()), 0);
  mappings.Prune();
  EXPECT_EQ(mappings.size(), 0u);
  EXPECT_EQ(mappings.mapped_bytes(), 0u);
}

TEST(FileMappingsTest, TheCapEvictsTheLeastRecentlyUsedAndRefusesWhatCannotFit) {
  TempDir dir;
  for (const char* name : {"a", "b", "c"}) WriteFile(dir.Join(name), std::string(4096, *name));
  WriteFile(dir.Join("big"), std::string(3 * 4096, 'x'));
  FileMappings mappings(2 * 4096);
  bool made = false;
  ASSERT_NE(mappings.Acquire(*Open(dir.Join("a")), &made), nullptr);
  ASSERT_NE(mappings.Acquire(*Open(dir.Join("b")), &made), nullptr);
  ASSERT_NE(mappings.Acquire(*Open(dir.Join("a")), &made), nullptr);  // a is now the newest
  EXPECT_FALSE(made);
  ASSERT_NE(mappings.Acquire(*Open(dir.Join("c")), &made), nullptr);  // evicts b
  EXPECT_EQ(mappings.size(), 2u);
  mappings.Acquire(*Open(dir.Join("a")), &made);
  EXPECT_FALSE(made) << "a was evicted instead of b";
  mappings.Acquire(*Open(dir.Join("b")), &made);
  EXPECT_TRUE(made);
  EXPECT_EQ(mappings.Acquire(*Open(dir.Join("big")), &made), nullptr);
  EXPECT_LE(mappings.mapped_bytes(), 2u * 4096);
}

TEST(FileMappingsTest, FilesWithoutADescriptorAreNotMapped) {
  TempDir dir;
  WriteFile(dir.Join("a"), std::string(4096, 'a'));
  testing::NoFdEnv env(Env::Default());
  auto file = env.NewRandomAccessFile(dir.Join("a"), OpenOptions{});
  ASSERT_TRUE(file.ok());
  FileMappings mappings(1 << 20);
  bool made = true;
  EXPECT_EQ(mappings.Acquire(**file, &made), nullptr);
  EXPECT_FALSE(made);
}

class MappedLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = HostDevice::CreatePooled(0, 64ull << 20);
    ASSERT_TRUE(d.ok()) << d.status();
    device_ = *std::move(d);
    ASSERT_TRUE(device_->WaitPopulated().ok());
  }

  std::unique_ptr<LoadPipeline> Pipeline(int64_t kept_mapping_bytes = -1) {
    LoadPipeline::Options options;
    options.io_mode = IoMode::kBuffered;
    options.kept_mapping_bytes = kept_mapping_bytes;
    auto p = LoadPipeline::Create(options);
    EXPECT_TRUE(p.ok()) << p.status();
    return *std::move(p);
  }

  void ExpectBytes(const LoadedModel& model, const CheckpointBuilder& builder) {
    for (const auto& bt : builder.tensors()) {
      const LoadedTensor* t = model.Find(bt.name);
      ASSERT_NE(t, nullptr) << bt.name;
      const char* at = static_cast<const char*>(model.allocation(0).ptr) + t->offset;
      ASSERT_EQ(std::memcmp(at, bt.bytes.data(), bt.bytes.size()), 0) << bt.name;
    }
  }

  void FlipByte(const std::string& path, uint64_t at) {
    int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char byte;
    ASSERT_EQ(::pread(fd, &byte, 1, at), 1);
    byte ^= 0x10;
    ASSERT_EQ(::pwrite(fd, &byte, 1, at), 1);
    ::close(fd);
  }

  TestStore store_;
  std::unique_ptr<HostDevice> device_;
};

TEST_F(MappedLoadTest, WarmLoadsIntoThePoolReadMappedAndKeepTheMapping) {
  CheckpointBuilder builder = TinyLlama(2, 256, 4096);  // tensors over several pieces
  ModelSource source = store_.Save(builder, "tiny");
  auto pipeline = Pipeline();
  for (int round = 0; round < 2; ++round) {
    LoadStats stats;
    auto model = pipeline->Load(source, {device_.get()}, PlanOptions{}, nullptr, {}, &stats);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_NE(stats.io.find("+mapped"), std::string::npos) << stats.io;
    ExpectBytes(**model, builder);
    EXPECT_EQ(pipeline->file_mappings()->size(), source.file_paths.size());
  }
}

TEST_F(MappedLoadTest, NoKeptMappingsReadsWithPread) {
  CheckpointBuilder builder = TinyLlama(2, 64, 256);
  ModelSource source = store_.Save(builder, "tiny");
  auto pipeline = Pipeline(/*kept_mapping_bytes=*/0);
  EXPECT_EQ(pipeline->file_mappings(), nullptr);
  LoadStats stats;
  auto model = pipeline->Load(source, {device_.get()}, PlanOptions{}, nullptr, {}, &stats);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(stats.io.find("mapped"), std::string::npos) << stats.io;
  ExpectBytes(**model, builder);
}

// A byte changed in the store after a load (the page cache holds the changed byte) fails
// the next load through the kept mapping, naming the tensor; the pool is left free.
TEST_F(MappedLoadTest, AByteChangedAfterALoadFailsTheNextOne) {
  CheckpointBuilder builder = TinyLlama(2, 256, 4096);
  ModelSource source = store_.Save(builder, "tiny");
  auto pipeline = Pipeline();
  ASSERT_TRUE(pipeline->Load(source, {device_.get()}, PlanOptions{}).ok());
  const store::ManifestTensor* victim = source.manifest.Find("lm_head.weight");
  ASSERT_NE(victim, nullptr);
  FlipByte(source.file_paths[victim->file], victim->offset + victim->size / 2);
  auto model = pipeline->Load(source, {device_.get()}, PlanOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kDataLoss) << model.status();
  EXPECT_NE(std::string(model.status().message()).find("lm_head.weight"), std::string::npos)
      << model.status();
  EXPECT_EQ(device_->live_allocations(), 0);
}

// A store file cut short after a load was kept mapped: the next load reports it as a
// truncated file (DATA_LOSS), as the pread path does, instead of touching the old
// mapping past the new end (SIGBUS).
TEST_F(MappedLoadTest, AFileCutShortAfterALoadIsAShortReadNotACrash) {
  CheckpointBuilder builder = TinyLlama(2, 256, 4096);
  ModelSource source = store_.Save(builder, "tiny");
  auto pipeline = Pipeline();
  ASSERT_TRUE(pipeline->Load(source, {device_.get()}, PlanOptions{}).ok());
  const std::string& path = source.file_paths[0];
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  ASSERT_EQ(::truncate(path.c_str(), st.st_size / 2), 0);
  auto model = pipeline->Load(source, {device_.get()}, PlanOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kDataLoss) << model.status();
  EXPECT_NE(std::string(model.status().message()).find("truncated"), std::string::npos)
      << model.status();
  EXPECT_EQ(device_->live_allocations(), 0);
}

// A deleted model's files are unmapped by the next load, so their disk space is freed.
TEST_F(MappedLoadTest, ADeletedModelIsUnmappedByTheNextLoad) {
  CheckpointBuilder a = TinyLlama(2, 64, 256, 1), b = TinyLlama(2, 64, 256, 2);
  ModelSource a_source = store_.Save(a, "a");
  ModelSource b_source = store_.Save(b, "b");
  auto pipeline = Pipeline();
  ASSERT_TRUE(pipeline->Load(a_source, {device_.get()}, PlanOptions{}).ok());
  EXPECT_EQ(pipeline->file_mappings()->size(), a_source.file_paths.size());
  ASSERT_TRUE(store_.store().Remove("a").ok());
  auto model = pipeline->Load(b_source, {device_.get()}, PlanOptions{});
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectBytes(**model, b);
  EXPECT_EQ(pipeline->file_mappings()->size(), b_source.file_paths.size());
}

}  // namespace
}  // namespace loadstar::loader
