// Fuzzes every RPC of the Controller service (loadstar.v1.Controller) through its real
// handlers: each input is a list of calls (rpc_harness.h framing) to a fresh Controller
// over the memory state store, with two in-process fake workers that hold model "m",
// served on an in-process gRPC server. Invariants: no crash, sanitizer report, hang or
// leak, whatever the requests; at start, every method of the descriptor has a handler.
// Workers a request names at an unknown address are unreachable (UNAVAILABLE), as they
// would be over the network.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "daemon/controller.h"
#include "daemon/controller_service.h"
#include "tests/daemon/fake_worker_client.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/rpc_harness.h"

namespace {

using namespace loadstar;
using daemon::testing::FakeWorkers;

constexpr uint64_t kMiB = 1ull << 20;
// Long enough for a fake cold start (a few ms), short enough that a waiting Acquire or
// an open WatchDeployment costs little.
constexpr std::chrono::milliseconds kDeadline{150};

class UnreachableWorker : public daemon::WorkerClient {
 public:
  absl::StatusOr<v1::InstanceReport> LoadInstance(
      const v1::LoadInstanceRequest&, const std::function<void(const v1::LoadProgress&)>&,
      daemon::CallCanceller*) override {
    return absl::UnavailableError("connection refused");
  }
  absl::Status UnloadInstance(const std::string&) override {
    return absl::UnavailableError("connection refused");
  }
  absl::StatusOr<v1::PlanLoadResponse> PlanLoad(const v1::LoadSpec&) override {
    return absl::UnavailableError("connection refused");
  }
};

// FakeWorkers for the addresses it created, unreachable workers for any other.
class FuzzWorkers : public daemon::WorkerClientFactory {
 public:
  FakeWorkers::Node* Add(const std::string& id) {
    FakeWorkers::Node* node = fakes_.Add(id, /*devices=*/2, 64 * kMiB);
    node->loader->AddModel("m", kMiB);
    node->loader->AddFile("m", "config.json", "{}");
    known_.insert(id + ":1");
    return node;
  }
  std::shared_ptr<daemon::WorkerClient> ForAddress(const std::string& address) override {
    if (known_.contains(address)) return fakes_.ForAddress(address);
    return std::make_shared<UnreachableWorker>();
  }

 private:
  FakeWorkers fakes_;
  std::set<std::string> known_;  // written before the controller exists, then read-only
};

// One cluster per input, so every input replays the same way.
struct Cluster {
  FuzzWorkers workers;
  std::unique_ptr<daemon::StateStore> state = daemon::NewMemoryStateStore();
  std::shared_ptr<daemon::Controller> controller;
  daemon::ControllerSlot slot;
  std::unique_ptr<daemon::ControllerService> service;
  std::unique_ptr<fuzz::InProcessServer> server;

  Cluster() {
    daemon::ControllerOptions o;
    o.state = state.get();
    o.workers = &workers;
    o.tick_seconds = 0.02;
    o.load_retry_backoff_seconds = 0;
    absl::StatusOr<std::unique_ptr<daemon::Controller>> c = daemon::Controller::Create(o);
    FUZZ_CHECK(c.ok(), "{}", c.status().ToString());
    controller = std::move(*c);
    for (const char* id : {"w1", "w2"}) {
      absl::Status s = controller->RegisterWorker(workers.Add(id)->manager->Info());
      FUZZ_CHECK(s.ok(), "{}", s.ToString());
    }
    slot.Set(controller);
    service = std::make_unique<daemon::ControllerService>(&slot);
    server = std::make_unique<fuzz::InProcessServer>(service.get());
  }
  ~Cluster() {
    controller->Stop();  // waiting Acquire / Watch handlers return, so Shutdown is quick
    server.reset();
  }
};

const google::protobuf::ServiceDescriptor& Service() {
  return fuzz::ServiceNamed(v1::Controller::service_full_name());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::QuietLogs();
  Cluster cluster;
  fuzz::CheckEveryMethodServed(cluster.server->channel(), Service(), kDeadline);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<fuzz::RpcStep> steps = fuzz::ParseSteps(Service(), data, size);
  if (steps.empty()) return 0;
  Cluster cluster;
  fuzz::RunSteps(cluster.server->channel(), steps, kDeadline);
  return 0;
}
