#include "daemon/worker_manager.h"

#include <gtest/gtest.h>

#include <thread>

#include "tests/daemon/fake_instance_loader.h"

namespace loadstar::daemon {
namespace {

loadstar::v1::LoadInstanceRequest Request(const std::string& id, const std::string& model) {
  loadstar::v1::LoadInstanceRequest r;
  r.set_instance_id(id);
  r.mutable_spec()->set_model(model);
  r.add_devices(0);
  return r;
}

TEST(WorkerManagerTest, LoadServeUnload) {
  testing::FakeInstanceLoader loader(1, 1 << 30);
  loader.AddModel("m", 3 << 20);
  WorkerManager w("w", "addr", &loader);
  int progress_calls = 0;
  auto report = w.Load(Request("i1", "m"), [&](const LoadProgressInfo&) {
    ++progress_calls;
    return true;
  });
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->state(), "ready");
  EXPECT_GT(progress_calls, 0);
  EXPECT_EQ(w.Load(Request("i1", "m"), [](auto&) { return true; }).status().code(),
            absl::StatusCode::kAlreadyExists);

  auto handle = w.GetInstance("i1");
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(handle->instance_id(), "i1");
  EXPECT_EQ(handle->tensors(0).size(), 3u << 20);

  loadstar::v1::ReadTensorRequest read;
  read.set_instance_id("i1");
  read.set_tensor("weight");
  read.set_offset(10);
  uint64_t total = 0;
  ASSERT_TRUE(w.ReadTensor(read, [&](uint64_t off, std::string_view data) {
                 EXPECT_EQ(off, total);
                 total += data.size();
                 return data.find_first_not_of('\x5a') == std::string_view::npos;
               }).ok());
  EXPECT_EQ(total, (3u << 20) - 10);
  read.set_tensor("missing");
  EXPECT_EQ(w.ReadTensor(read, [](auto, auto) { return true; }).code(),
            absl::StatusCode::kNotFound);

  EXPECT_EQ(w.Info().instances_size(), 1);
  ASSERT_TRUE(w.Unload("i1").ok());
  EXPECT_EQ(loader.live_instances(), 0);
  EXPECT_EQ(w.Unload("i1").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(w.GetInstance("i1").status().code(), absl::StatusCode::kNotFound);
}

TEST(WorkerManagerTest, HandleCarriesSpecFilesAndWorker) {
  testing::FakeInstanceLoader loader(1, 1 << 30);
  loader.AddModel("m", 1 << 20);
  loader.AddFile("m", "config.json", "{}");
  // Larger than one ReadModelFile chunk (1 MiB), so it streams in pieces.
  std::string tokenizer((5 << 19) + 7, 't');
  tokenizer[12345] = 'x';
  loader.AddFile("m", "tokenizer.json", tokenizer);
  loader.AddFile("m", "1_Pooling/config.json", "");
  WorkerManager w("w7", "addr", &loader);
  loadstar::v1::LoadInstanceRequest req = Request("i1", "m");
  req.mutable_spec()->set_torch_dtype("bfloat16");
  req.mutable_spec()->mutable_quantization()->set_method("nf4");
  ASSERT_TRUE(w.Load(req, [](auto&) { return true; }).ok());
  auto handle = w.GetInstance("i1");
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(handle->worker_id(), "w7");
  EXPECT_EQ(handle->spec().torch_dtype(), "bfloat16");
  EXPECT_EQ(handle->spec().quantization().method(), "nf4");
  ASSERT_EQ(handle->files_size(), 3);
  EXPECT_EQ(handle->files(0).name(), "1_Pooling/config.json");
  EXPECT_EQ(handle->files(2).name(), "tokenizer.json");
  EXPECT_EQ(handle->files(2).size(), tokenizer.size());

  auto read_file = [&](const std::string& name, std::string* out, int* chunks) {
    loadstar::v1::ReadModelFileRequest r;
    r.set_model("m");
    r.set_name(name);
    return w.ReadModelFile(r, [&](uint64_t offset, std::string_view data) {
      EXPECT_EQ(offset, out->size());
      out->append(data);
      ++*chunks;
      return true;
    });
  };
  std::string got;
  int chunks = 0;
  ASSERT_TRUE(read_file("tokenizer.json", &got, &chunks).ok());
  EXPECT_EQ(got, tokenizer);
  EXPECT_EQ(chunks, 3);
  got.clear();
  chunks = 0;
  ASSERT_TRUE(read_file("1_Pooling/config.json", &got, &chunks).ok());
  EXPECT_EQ(got, "");
  EXPECT_EQ(chunks, 1);  // an empty file still answers once
  EXPECT_EQ(read_file("../manifest.json", &got, &chunks).code(), absl::StatusCode::kNotFound);
}

// worker_rpc_fuzzer finding: rows = 4e9 made the probe allocate ~512 GB and kill the worker.
TEST(WorkerManagerTest, ProbeRefusesHugeRowCounts) {
  testing::FakeInstanceLoader loader(1, 1 << 30);
  loader.AddModel("m", 1 << 20);
  WorkerManager w("w", "addr", &loader);
  ASSERT_TRUE(w.Load(Request("i1", "m"), [](auto&) { return true; }).ok());
  loadstar::v1::ProbeRequest probe;
  probe.set_instance_id("i1");
  probe.set_rows(4'000'000'000u);
  EXPECT_EQ(w.Probe(probe).status().code(), absl::StatusCode::kInvalidArgument);
  probe.set_rows(8);  // reaches the loader (the fake does not probe)
  EXPECT_EQ(w.Probe(probe).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(WorkerManagerTest, UnloadDuringLoadCancelsAndFrees) {
  testing::FakeInstanceLoader loader(1, 1 << 30);
  loader.AddModel("m", 1 << 20);
  loader.set_load_seconds(5);
  WorkerManager w("w", "addr", &loader);
  absl::Status result;
  std::thread t([&] { result = w.Load(Request("i1", "m"), [](auto&) { return true; }).status(); });
  while (w.Instances().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(w.GetInstance("i1").status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(w.Unload("i1").ok());
  t.join();
  EXPECT_EQ(result.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(w.Instances().empty());
  EXPECT_EQ(loader.used(0), 0u);
}

TEST(WorkerManagerTest, ClientGoneCancels) {
  testing::FakeInstanceLoader loader(1, 1 << 30);
  loader.AddModel("m", 1 << 20);
  loader.set_load_seconds(0.5);
  WorkerManager w("w", "addr", &loader);
  auto r = w.Load(Request("i1", "m"), [](auto&) { return false; });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(loader.used(0), 0u);
  EXPECT_EQ(w.Load(Request("i2", "nope"), [](auto&) { return true; }).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace loadstar::daemon
