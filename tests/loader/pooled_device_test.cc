// Pooled host devices (HostDevice::CreatePooled): one populated shm object per device,
// allocations carved from it, freed ranges zeroed before reuse; and loads into it.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "loader/host_device.h"
#include "loader/load_pipeline.h"
#include "tests/loader/loader_test_util.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::CheckpointBuilder;
using testing::TestStore;
using testing::TinyLlama;

const uint64_t kPage = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));

uint64_t PageRound(uint64_t n) { return (n + kPage - 1) / kPage * kPage; }

std::unique_ptr<HostDevice> Pooled(uint64_t bytes) {
  auto d = HostDevice::CreatePooled(0, bytes);
  EXPECT_TRUE(d.ok()) << d.status();
  return *std::move(d);
}

// What a consumer sees: `bytes` at `offset` of the exported object, mapped as the clients
// map it (shm_open read-only + mmap at the offset).
std::string MapAndRead(const std::string& shm_name, uint64_t offset, uint64_t bytes) {
  int fd = ::shm_open(shm_name.c_str(), O_RDONLY, 0);
  EXPECT_GE(fd, 0) << shm_name;
  if (fd < 0) return "";
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(offset));
  ::close(fd);
  EXPECT_NE(p, MAP_FAILED);
  if (p == MAP_FAILED) return "";
  std::string out(static_cast<const char*>(p), bytes);
  ::munmap(p, bytes);
  return out;
}

TEST(PooledHostDeviceTest, AllocationsShareOneObjectAtPageOffsets) {
  auto device = Pooled(1 << 20);
  EXPECT_TRUE(device->pooled());
  ASSERT_TRUE(device->WaitPopulated().ok());
  auto a = device->Allocate(3 * kPage + 17);
  auto b = device->Allocate(5000);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(device->ReadsInPlace(*a));  // populated: filled at memcpy speed
  auto ha = device->Export(*a), hb = device->Export(*b);
  ASSERT_TRUE(ha.ok() && hb.ok());
  EXPECT_EQ(ha->shm_name, hb->shm_name);
  EXPECT_EQ(ha->offset % kPage, 0u);
  EXPECT_EQ(hb->offset % kPage, 0u);
  EXPECT_GE(hb->offset, ha->offset + PageRound(a->size));  // disjoint ranges
  EXPECT_EQ(ha->size, a->size);
  std::string data(b->size, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13 + 1);
  ASSERT_TRUE(device->CopyToDeviceAsync(*b, 0, data.data(), data.size()).ok());
  EXPECT_EQ(MapAndRead(hb->shm_name, hb->offset, hb->size), data);
  EXPECT_EQ(device->free_memory(), (1u << 20) - PageRound(a->size) - PageRound(b->size));
  ASSERT_TRUE(device->Free(*a).ok());
  ASSERT_TRUE(device->Free(*b).ok());
  EXPECT_EQ(device->free_memory(), 1u << 20);
  EXPECT_EQ(device->Free(*a).code(), absl::StatusCode::kNotFound);
}

// No byte of an earlier allocation is readable through a later one: Free zeroes the whole
// range, the padding past `size` in its last page included.
TEST(PooledHostDeviceTest, FreedMemoryIsZeroedBeforeReuse) {
  auto device = Pooled(1 << 20);
  auto a = device->Allocate(2 * kPage + 100);
  ASSERT_TRUE(a.ok());
  auto ha = device->Export(*a);
  ASSERT_TRUE(ha.ok());
  std::memset(a->ptr, 0x5a, PageRound(a->size));  // every byte of its pages, padding too
  ASSERT_TRUE(device->Free(*a).ok());
  auto b = device->Allocate(3 * kPage);  // the same place, and one page further
  ASSERT_TRUE(b.ok());
  auto hb = device->Export(*b);
  ASSERT_TRUE(hb.ok());
  EXPECT_EQ(hb->offset, ha->offset);
  EXPECT_EQ(MapAndRead(hb->shm_name, hb->offset, hb->size), std::string(hb->size, '\0'));
}

TEST(PooledHostDeviceTest, FullPoolIsResourceExhaustedAndFreedRangesMerge) {
  auto device = Pooled(16 * kPage);
  auto a = device->Allocate(4 * kPage);
  auto b = device->Allocate(4 * kPage);
  auto c = device->Allocate(8 * kPage);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  auto full = device->Allocate(1);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(full.status().message()).find("host:0"), std::string::npos);
  EXPECT_NE(std::string(full.status().message()).find("pool"), std::string::npos);
  ASSERT_TRUE(device->Free(*b).ok());
  ASSERT_TRUE(device->Free(*a).ok());  // merges with b's range
  auto big = device->Allocate(8 * kPage);
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->ptr, a->ptr);
  EXPECT_EQ(device->Allocate(1).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(device->live_allocations(), 2);
}

TEST(PooledHostDeviceTest, DestructorUnlinksThePool) {
  std::string name;
  {
    auto device = Pooled(1 << 20);
    auto a = device->Allocate(100);
    ASSERT_TRUE(a.ok());
    name = device->Export(*a)->shm_name;
    int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0);
    struct stat st;
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 1u << 20);
    ::close(fd);
  }  // destroyed with an allocation live, possibly while still populating
  EXPECT_LT(::shm_open(name.c_str(), O_RDONLY, 0), 0);
}

TEST(PooledHostDeviceTest, CreateDevicesBuildsPooledHostDevices) {
  auto devices = CreateDevices("host:2", 1 << 20, 0, HostMemory::kPooled);
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_EQ(devices->size(), 2u);
  for (const auto& d : *devices) {
    auto* host = dynamic_cast<HostDevice*>(d.get());
    ASSERT_NE(host, nullptr);
    EXPECT_TRUE(host->pooled());
    EXPECT_EQ(d->total_memory(), 1u << 20);
  }
  EXPECT_EQ(CreateDevices("host:1", 1 << 20, 1 << 20, HostMemory::kPooled).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateDevices("host:1", 0, 0, HostMemory::kPooled).status().code(),
            absl::StatusCode::kInvalidArgument);
  // More than /dev/shm holds is refused at creation, naming the way out.
  auto huge = CreateDevices("host:2", 1ull << 50, 0, HostMemory::kPooled);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(huge.status().message()).find("device_memory_pool: false"),
            std::string::npos)
      << huge.status();
}

// Every byte of a model's allocation as a consumer maps it: the tensors' bytes where the
// plan put them, zero everywhere else (alignment padding, the last page's tail).
void ExpectExactlyTheModel(HostDevice& device, const LoadedModel& model,
                           const CheckpointBuilder& builder) {
  auto h = device.Export(model.allocation(0));
  ASSERT_TRUE(h.ok());
  std::string seen = MapAndRead(h->shm_name, h->offset, PageRound(h->size));
  std::string want(seen.size(), '\0');
  for (const auto& bt : builder.tensors()) {
    const LoadedTensor* t = model.Find(bt.name);
    ASSERT_NE(t, nullptr);
    std::memcpy(want.data() + t->offset, bt.bytes.data(), bt.bytes.size());
  }
  ASSERT_EQ(seen.size(), want.size());
  for (size_t i = 0; i < seen.size(); ++i) {
    ASSERT_EQ(seen[i], want[i]) << "byte " << i << " of " << seen.size();
  }
}

TEST(PooledLoadTest, NextModelSeesNoByteOfThePreviousOne) {
  TestStore store;
  CheckpointBuilder big = TinyLlama(4, 128, 256, /*seed=*/1);
  CheckpointBuilder small = TinyLlama(2, 64, 128, /*seed=*/2);
  ModelSource big_source = store.Save(big, "big");
  ModelSource small_source = store.Save(small, "small");
  auto device = Pooled(64ull << 20);
  for (IoMode mode : {IoMode::kBuffered, IoMode::kDirect}) {
    LoadPipeline::Options options;
    options.io_mode = mode;
    auto pipeline = LoadPipeline::Create(options);
    ASSERT_TRUE(pipeline.ok());
    void* first = nullptr;
    {
      auto model = (*pipeline)->Load(big_source, {device.get()}, PlanOptions{});
      ASSERT_TRUE(model.ok()) << model.status();
      EXPECT_TRUE(device->ReadsInPlace((*model)->allocation(0)));
      ExpectExactlyTheModel(*device, **model, big);
      first = (*model)->allocation(0).ptr;
      // Whatever the previous user left in its pages, padding included.
      std::memset(first, 0x77, PageRound((*model)->allocation(0).size));
    }  // unloaded: its range is zeroed and free
    auto model = (*pipeline)->Load(small_source, {device.get()}, PlanOptions{});
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->allocation(0).ptr, first);  // the same memory, reused
    ExpectExactlyTheModel(*device, **model, small);
  }
}

TEST(PooledLoadTest, FullPoolIsResourceExhaustedLeavingResidentModelsIntact) {
  TestStore store;
  CheckpointBuilder a = TinyLlama(4, 128, 256, 1);
  ModelSource a_source = store.Save(a, "a");
  ModelSource b_source = store.Save(TinyLlama(4, 128, 256, 2), "b");
  auto pipeline = LoadPipeline::Create({});
  ASSERT_TRUE(pipeline.ok());
  // Room for one copy of the model, not two.
  auto device = Pooled(PageRound(a_source.manifest.TotalBytes()) * 3 / 2);
  auto first = (*pipeline)->Load(a_source, {device.get()}, PlanOptions{});
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = (*pipeline)->Load(b_source, {device.get()}, PlanOptions{});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  EXPECT_EQ(device->live_allocations(), 1);
  ExpectExactlyTheModel(*device, **first, a);
  first->reset();
  EXPECT_EQ(device->live_allocations(), 0);
  EXPECT_EQ(device->free_memory(), device->total_memory());
  EXPECT_TRUE((*pipeline)->Load(b_source, {device.get()}, PlanOptions{}).ok());
}

// Checksums are verified on the pooled path too (reads in place, hashed in L2-sized
// pieces), and a failed load leaves its range free and zeroed.
TEST(PooledLoadTest, FlippedByteInTheStoreFailsTheLoad) {
  TestStore store;
  CheckpointBuilder builder = TinyLlama(2, 256, 4096);  // several 512 KiB reads per tensor
  ModelSource source = store.Save(builder, "tiny");
  const store::ManifestTensor* victim = source.manifest.Find("model.embed_tokens.weight");
  ASSERT_NE(victim, nullptr);
  ASSERT_GT(victim->size, 1u << 20);
  const std::string& path = source.file_paths[victim->file];
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char byte;
  const uint64_t at = victim->offset + victim->size - 3;  // in its last piece
  ASSERT_EQ(::pread(fd, &byte, 1, at), 1);
  byte ^= 0x01;
  ASSERT_EQ(::pwrite(fd, &byte, 1, at), 1);
  ::fsync(fd);
  ::close(fd);
  auto device = Pooled(64ull << 20);
  ASSERT_TRUE(device->WaitPopulated().ok());
  for (IoMode mode : {IoMode::kBuffered, IoMode::kDirect}) {
    LoadPipeline::Options options;
    options.io_mode = mode;
    auto pipeline = LoadPipeline::Create(options);
    ASSERT_TRUE(pipeline.ok());
    auto model = (*pipeline)->Load(source, {device.get()}, PlanOptions{});
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kDataLoss) << model.status();
    EXPECT_NE(std::string(model.status().message()).find(victim->name), std::string::npos);
    EXPECT_EQ(device->live_allocations(), 0);
    EXPECT_EQ(device->free_memory(), device->total_memory());
  }
  // The whole pool is zero again: nothing of the failed loads' bytes remains.
  auto all = device->Allocate(64ull << 20);
  ASSERT_TRUE(all.ok());
  const char* p = static_cast<const char*>(all->ptr);
  for (uint64_t i = 0; i < all->size; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    ASSERT_EQ(v, 0u) << "byte " << i;
  }
}

}  // namespace
}  // namespace loadstar::loader
