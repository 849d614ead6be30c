// The DRAM tier fills itself (issue 14 item 6): on a worker with a host cache, a model's
// first load reads the disk and is admitted to the cache; after it is unloaded (scale to
// zero), the next cold start is served from DRAM (tier host_cache), and the worker's
// WorkerInfo says so (StoredModel.in_host_cache) for the controller's placement. Over the
// real PipelineInstanceLoader on host devices.
#include <map>
#include <memory>
#include <string>

#include "daemon/pipeline_instance_loader.h"
#include "daemon/worker_manager.h"
#include "gtest/gtest.h"
#include "tests/loader/loader_test_util.h"

namespace loadstar::daemon {
namespace {

using loader::testing::TestStore;
using loader::testing::TinyLlama;
namespace v1 = loadstar::v1;

v1::LoadInstanceRequest Request(const std::string& id, const std::string& model,
                                const std::string& method = "") {
  v1::LoadInstanceRequest r;
  r.set_instance_id(id);
  r.set_deployment("d");
  r.mutable_spec()->set_model(model);
  r.mutable_spec()->set_num_gpus(1);
  if (!method.empty()) r.mutable_spec()->mutable_quantization()->set_method(method);
  r.add_devices(0);
  return r;
}

std::unique_ptr<PipelineInstanceLoader> Loader(const TestStore& ts, uint64_t cache_bytes) {
  PipelineInstanceLoaderOptions o;
  o.store_dir = ts.dir().Join("store");
  o.devices = "host:1";
  o.host_device_bytes = 1ull << 30;
  o.host_cache_bytes = cache_bytes;
  o.measure_bandwidth = false;
  o.replica_path = PathChoice::kHost;  // the host tiers only
  auto l = PipelineInstanceLoader::Create(o);
  EXPECT_TRUE(l.ok()) << l.status();
  return *std::move(l);
}

bool InHostCache(const v1::WorkerInfo& info, const std::string& model) {
  for (const v1::StoredModel& m : info.models()) {
    if (m.name() == model) return m.in_host_cache();
  }
  ADD_FAILURE() << "worker does not list " << model;
  return false;
}

std::map<std::string, std::string> Tensors(WorkerManager& w, const std::string& id) {
  std::map<std::string, std::string> out;
  auto handle = w.GetInstance(id);
  EXPECT_TRUE(handle.ok()) << handle.status();
  if (!handle.ok()) return out;
  for (const v1::TensorInfo& t : handle->tensors()) {
    v1::ReadTensorRequest read;
    read.set_instance_id(id);
    read.set_tensor(t.name());
    std::string bytes;
    EXPECT_TRUE(w.ReadTensor(read, [&](uint64_t, std::string_view d) {
                   bytes.append(d);
                   return true;
                 }).ok());
    out[t.name()] = std::move(bytes);
  }
  return out;
}

TEST(HostCacheTierTest, ColdStartAfterScaleToZeroIsServedFromDram) {
  TestStore ts;
  loadstar::testing::CheckpointBuilder builder = TinyLlama(2, 128, 256);
  ts.Save(builder, "m");
  auto loader = Loader(ts, 64ull << 20);
  WorkerManager w("w", "addr", loader.get());
  EXPECT_FALSE(InHostCache(w.Info(), "m"));
  EXPECT_EQ(w.Info().host_cache_used(), 0u);

  auto first = w.Load(Request("i1", "m"), [](auto&) { return true; });
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->tier(), "disk");
  // Admitted while it streamed: the heartbeat's WorkerInfo says so.
  v1::WorkerInfo info = w.Info();
  EXPECT_TRUE(InHostCache(info, "m"));
  EXPECT_GT(info.host_cache_used(), 0u);
  ASSERT_TRUE(w.Unload("i1").ok());  // scale to zero

  auto second = w.Load(Request("i2", "m"), [](auto&) { return true; });
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->tier(), "host_cache");
  auto handle = w.GetInstance("i2");
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(handle->tier(), "host_cache");
  for (const auto& [name, bytes] : Tensors(w, "i2")) {
    EXPECT_TRUE(bytes == builder.Bytes(name)) << name;
  }
  // A quantized deployment of the same model quantizes the cached checkpoint bytes.
  auto nf4 = w.Load(Request("i3", "m", "nf4"), [](auto&) { return true; });
  ASSERT_TRUE(nf4.ok()) << nf4.status();
  EXPECT_EQ(nf4->tier(), "host_cache");
}

TEST(HostCacheTierTest, TooSmallCacheStillLoadsFromDisk) {
  TestStore ts;
  ts.Save(TinyLlama(2, 128, 256), "m");
  auto loader = Loader(ts, 4096);
  WorkerManager w("w", "addr", loader.get());
  for (const char* id : {"i1", "i2"}) {
    auto r = w.Load(Request(id, "m"), [](auto&) { return true; });
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->tier(), "disk");
    ASSERT_TRUE(w.Unload(id).ok());
  }
  EXPECT_FALSE(InHostCache(w.Info(), "m"));
  EXPECT_EQ(w.Info().host_cache_used(), 0u);
}

}  // namespace
}  // namespace loadstar::daemon
