// Fuzzes every RPC of the Worker service (loadstar.v1.Worker) through its real handlers:
// each input is a list of calls (rpc_harness.h framing) to a fresh WorkerManager over the
// real PipelineInstanceLoader (two 16 MiB host devices, a 4 MiB host cache) and a store
// holding one small generated model "tiny" (fp16/bf16/fp32 tensors, quantizable layers,
// kept tokenizer files), served on an in-process gRPC server. LoadInstance requests
// therefore run the load pipeline, on-the-fly quantization, ReadTensor, ReadModelFile
// and Probe on real data. Invariants: no crash, sanitizer report, hang or leak; at start,
// every method of the descriptor has a handler.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/env.h"
#include "daemon/pipeline_instance_loader.h"
#include "daemon/worker_manager.h"
#include "daemon/worker_service.h"
#include "store/store.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/rpc_harness.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/test_util.h"

namespace {

using namespace loadstar;

// Loads and quantizes of "tiny" take a few ms under ASan; a stream still open at the
// deadline (a load that waits on nothing cannot) is cancelled.
constexpr std::chrono::milliseconds kDeadline{300};

// The store and loader outlive all inputs (building the store per input would dominate);
// a worker's instances do not: each input gets its own WorkerManager. What Prefetch put
// in the host cache does carry over, so a cache-dependent finding may need two inputs.
struct Worker {
  testing::TempDir dir;
  std::unique_ptr<daemon::PipelineInstanceLoader> loader;

  Worker() {
    testing::CheckpointBuilder hf;
    hf.Add("model.embed_tokens.weight", DType::kF16, {32, 64})
        .Add("model.layers.0.self_attn.q_proj.weight", DType::kBF16, {64, 64})
        .Add("model.layers.0.mlp.up_proj.weight", DType::kF16, {128, 64})
        .Add("model.layers.0.mlp.down_proj.weight", DType::kF32, {64, 128})
        .Add("model.norm.weight", DType::kF32, {64})
        .Add("lm_head.weight", DType::kF16, {32, 64})
        .Shards(2)
        .ExtraFile("tokenizer.json", R"({"version": "1.0", "model": {"type": "BPE"}})")
        .ExtraFile("generation_config.json", "{}");
    const std::string src = dir.Join("hf");
    absl::Status s = hf.Write(src);
    FUZZ_CHECK(s.ok(), "{}", s.ToString());
    absl::StatusOr<std::unique_ptr<store::Store>> st = store::Store::Open({dir.Join("store")});
    FUZZ_CHECK(st.ok(), "{}", st.status().ToString());
    absl::StatusOr<store::Manifest> saved = (*st)->Save(src, "tiny");
    FUZZ_CHECK(saved.ok(), "{}", saved.status().ToString());

    daemon::PipelineInstanceLoaderOptions o;
    o.store_dir = dir.Join("store");
    o.devices = "host:2";
    o.host_device_bytes = 16ull << 20;
    o.host_cache_bytes = 4ull << 20;
    o.measure_bandwidth = false;
    o.pipeline.threads = 2;
    o.pipeline.chunk_bytes = 64 << 10;
    o.pipeline.ring_bytes = 1 << 20;
    auto l = daemon::PipelineInstanceLoader::Create(o);
    FUZZ_CHECK(l.ok(), "{}", l.status().ToString());
    loader = std::move(*l);
  }
};

Worker& SharedWorker() {
  // Never destroyed: libFuzzer may exit while an input runs. scripts/fuzz points
  // TEST_TMPDIR at its build dir and clears it, so the store does not pile up in /tmp.
  static Worker* worker = new Worker();
  return *worker;
}

struct Server {
  daemon::WorkerManager manager{"w1", "in-process", SharedWorker().loader.get()};
  daemon::WorkerService service{&manager};
  fuzz::InProcessServer server{&service};
};

const google::protobuf::ServiceDescriptor& Service() {
  return fuzz::ServiceNamed(v1::Worker::service_full_name());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::QuietLogs();
  Server s;
  fuzz::CheckEveryMethodServed(s.server.channel(), Service(), kDeadline);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<fuzz::RpcStep> steps = fuzz::ParseSteps(Service(), data, size);
  if (steps.empty()) return 0;
  Server s;
  fuzz::RunSteps(s.server.channel(), steps, kDeadline);
  return 0;
}
