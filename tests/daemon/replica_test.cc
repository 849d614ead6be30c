// Warm scale-out on one worker (SPEC §5 Communicator): a second instance of a resident
// model is copied device-to-device from it by the worker's communicator, reported as tier
// device_copy with its GB/s; it is byte-identical to the source and shares no memory with
// it. Over the real PipelineInstanceLoader on host devices.
#include <chrono>
#include <cstdio>
#include <memory>

#include "daemon/metrics_server.h"
#include "daemon/pipeline_instance_loader.h"
#include "daemon/worker_manager.h"
#include "daemon/worker_metrics.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/loader/loader_test_util.h"

namespace loadstar::daemon {
namespace {

using loader::testing::TestStore;
using loader::testing::TinyLlama;
namespace v1 = loadstar::v1;

v1::LoadInstanceRequest Request(const std::string& id, std::vector<uint32_t> devices,
                                const std::string& device_map = "",
                                const std::string& method = "") {
  v1::LoadInstanceRequest r;
  r.set_instance_id(id);
  r.set_deployment("d");
  r.mutable_spec()->set_model("m");
  r.mutable_spec()->set_num_gpus(static_cast<uint32_t>(devices.size()));
  r.mutable_spec()->set_device_map(device_map);
  if (!method.empty()) r.mutable_spec()->mutable_quantization()->set_method(method);
  for (uint32_t d : devices) r.add_devices(d);
  return r;
}

std::unique_ptr<PipelineInstanceLoader> Loader(const TestStore& ts, const std::string& devices,
                                               PathChoice replica, bool measure = false) {
  PipelineInstanceLoaderOptions o;
  o.store_dir = ts.dir().Join("store");
  o.devices = devices;
  o.host_device_bytes = 1ull << 30;
  o.measure_bandwidth = measure;  // defaults: disk 1e9, copy 5e9, device copy 2e10
  o.replica_path = replica;
  auto l = PipelineInstanceLoader::Create(o);
  EXPECT_TRUE(l.ok()) << l.status();
  return *std::move(l);
}

// Every tensor's bytes as the worker serves them.
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

double Seconds(const std::function<void()>& f) {
  auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(ReplicaTest, WarmScaleOutCopiesFromTheResidentInstance) {
  TestStore ts;
  loadstar::testing::CheckpointBuilder builder = TinyLlama(4, 512, 4096);  // ~24 MiB
  ts.Save(builder, "m");
  auto loader = Loader(ts, "host:2", PathChoice::kMeasured);
  EXPECT_EQ(loader->communicator(), "host");
  EXPECT_GT(loader->device_copy_bandwidth(), 0);
  WorkerManager w("w", "addr", loader.get());
  auto first = w.Load(Request("i1", {0}), [](auto&) { return true; });
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->tier(), "disk");
  EXPECT_GT(first->gbps(), 0);

  absl::StatusOr<v1::InstanceReport> second;
  double copy_s = Seconds([&] { second = w.Load(Request("i2", {1}), [](auto&) { return true; }); });
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->tier(), "device_copy");
  EXPECT_EQ(second->copied_from(), "i1");
  EXPECT_EQ(second->source(), first->source());
  EXPECT_GT(second->gbps(), 0);
  EXPECT_EQ(second->bytes(), first->bytes());
  auto handle = w.GetInstance("i2");
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(handle->tier(), "device_copy");
  EXPECT_EQ(handle->gbps(), second->gbps());
  EXPECT_EQ(handle->devices(0).name(), "host:1");
  // WorkerInfo carries the communicator's bandwidth for the scheduler.
  EXPECT_EQ(w.Info().device_copy_bandwidth(), loader->device_copy_bandwidth());
  EXPECT_EQ(w.Info().communicator(), "host");

  // Byte-identical to the source and to the store.
  auto a = Tensors(w, "i1"), b = Tensors(w, "i2");
  EXPECT_EQ(a.size(), builder.tensors().size());
  EXPECT_TRUE(a == b);
  for (const auto& [name, bytes] : b) EXPECT_TRUE(bytes == builder.Bytes(name)) << name;
  // Its own memory (another device's pool, or another range of the same one), and it
  // outlives its source.
  auto h1 = w.GetInstance("i1");
  ASSERT_TRUE(h1.ok());
  ASSERT_EQ(h1->allocations_size(), 1);
  ASSERT_EQ(handle->allocations_size(), 1);
  EXPECT_NE(std::make_pair(h1->allocations(0).shm_name(), h1->allocations(0).offset()),
            std::make_pair(handle->allocations(0).shm_name(), handle->allocations(0).offset()));
  ASSERT_TRUE(w.Unload("i1").ok());
  EXPECT_TRUE(Tensors(w, "i2") == b);
  // With the source gone, a third comes from the copy (still resident), on device 0.
  auto third = w.Load(Request("i3", {0}), [](auto&) { return true; });
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->tier(), "device_copy");
  EXPECT_EQ(third->copied_from(), "i2");
  ASSERT_TRUE(w.Unload("i2").ok());
  ASSERT_TRUE(w.Unload("i3").ok());
  // Nothing resident: read from the store again.
  auto fourth = w.Load(Request("i4", {0}), [](auto&) { return true; });
  ASSERT_TRUE(fourth.ok());
  EXPECT_EQ(fourth->tier(), "disk");

  // The host path, forced, for the timing (printed, not asserted: a shared machine).
  auto host_loader = Loader(ts, "host:2", PathChoice::kHost);
  WorkerManager hw("w", "addr", host_loader.get());
  ASSERT_TRUE(hw.Load(Request("h1", {0}), [](auto&) { return true; }).ok());
  absl::StatusOr<v1::InstanceReport> host;
  double host_s = Seconds([&] { host = hw.Load(Request("h2", {1}), [](auto&) { return true; }); });
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(host->tier(), "disk");
  EXPECT_TRUE(Tensors(hw, "h2") == b);
  std::printf("warm scale-out of %llu bytes: device_copy %.4f s (%.2f GB/s), host path %.4f s "
              "(%.2f GB/s)\n",
              static_cast<unsigned long long>(second->bytes()), copy_s, second->gbps(), host_s,
              host->gbps());
}

TEST(ReplicaTest, TensorParallelQuantizedReplicaAndSpecMustMatch) {
  TestStore ts;
  ts.Save(TinyLlama(2, 128, 256), "m");
  auto loader = Loader(ts, "host:4", PathChoice::kDevice);
  WorkerManager w("w", "addr", loader.get());
  auto first = w.Load(Request("i1", {0, 1}, "tensor_parallel", "nf4"), [](auto&) { return true; });
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->tier(), "disk");
  EXPECT_FALSE(first->spread().empty());
  // Another LoadSpec (int8) is no source for it.
  auto other = w.Load(Request("i2", {2, 3}, "tensor_parallel", "int8"), [](auto&) { return true; });
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->tier(), "disk");
  // The same spec on other devices: copied, the same table, per device.
  auto copy = w.Load(Request("i3", {2, 3}, "tensor_parallel", "nf4"), [](auto&) { return true; });
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ(copy->tier(), "device_copy");
  EXPECT_EQ(copy->copied_from(), "i1");
  auto h1 = w.GetInstance("i1"), h3 = w.GetInstance("i3");
  ASSERT_TRUE(h1.ok() && h3.ok());
  ASSERT_EQ(h1->tensors_size(), h3->tensors_size());
  for (int i = 0; i < h1->tensors_size(); ++i) {
    EXPECT_EQ(h1->tensors(i).name(), h3->tensors(i).name());
    EXPECT_EQ(h1->tensors(i).device(), h3->tensors(i).device());  // index into its devices
    EXPECT_EQ(h1->tensors(i).offset(), h3->tensors(i).offset());
    EXPECT_EQ(h1->tensors(i).quant().absmax_offset(), h3->tensors(i).quant().absmax_offset());
  }
  EXPECT_EQ(h3->devices(0).name(), "host:2");
  EXPECT_EQ(h3->devices(1).name(), "host:3");
}

TEST(ReplicaTest, MeasuredBandwidthsAndTheHostPathWhenItIsFaster) {
  TestStore ts;
  ts.Save(TinyLlama(1, 64, 64), "m");
  auto loader = Loader(ts, "host:2", PathChoice::kMeasured, /*measure=*/true);
  EXPECT_GT(loader->device_copy_bandwidth(), 0);
  EXPECT_GT(loader->spread_bandwidths().host_to_device, 0);
  EXPECT_GT(loader->spread_bandwidths().host_to_devices_parallel, 0);
  std::printf("measured: disk %.2f GB/s, copy %.2f GB/s, host->device %.2f GB/s (all: %.2f), "
              "device copy %.2f GB/s\n",
              loader->disk_bandwidth() / 1e9, loader->copy_bandwidth() / 1e9,
              loader->spread_bandwidths().host_to_device / 1e9,
              loader->spread_bandwidths().host_to_devices_parallel / 1e9,
              loader->device_copy_bandwidth() / 1e9);
}

TEST(ReplicaTest, MetricsCountBytesByTierIncludingDeviceCopy) {
  TestStore ts;
  ts.Save(TinyLlama(1, 64, 64), "m");
  auto loader = Loader(ts, "host:1", PathChoice::kDevice);
  WorkerManager w("w", "addr", loader.get());
  auto server = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  WorkerMetrics metrics(server->get(), &w);
  for (const char* id : {"i1", "i2"}) {
    v1::LoadInstanceRequest r = Request(id, {0});
    auto report = w.Load(r, [](auto&) { return true; });
    ASSERT_TRUE(report.ok()) << report.status();
    metrics.RecordLoad(r, report);
  }
  std::map<std::string, double> bytes_by_tier;
  for (const auto& family : (*server)->registry().Collect()) {
    if (family.name != "loadstar_load_bytes_total") continue;
    for (const auto& m : family.metric) {
      for (const auto& label : m.label) {
        if (label.name == "tier") bytes_by_tier[label.value] += m.counter.value;
      }
    }
  }
  EXPECT_GT(bytes_by_tier["disk"], 0);
  EXPECT_EQ(bytes_by_tier["device_copy"], bytes_by_tier["disk"]);
}

}  // namespace
}  // namespace loadstar::daemon
