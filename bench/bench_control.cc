// Control-plane benchmarks (SPEC §8):
//  1. warm Acquire over loopback gRPC (controller + worker in this process), with the
//     SQLite state store and again with the memory store (what the state writes cost):
//     a. one client: p50/p99 of Acquire with a Release after each; target p99 < 2 ms;
//     b. 16 concurrent clients (a channel each), each looping Acquire then Release:
//        pairs per second; target >= 5,000/s; also how the StateWriter grouped the
//        writes (batches per commit);
//     c. the SQLite store alone: a commit of 1 and of 16 lease writes;
//  2. deploy-to-ready overhead: wall time from Deploy(min_instances 1) until the instance
//     is ready, minus the worker's own load time of it (LoadPipeline); target < 20 ms;
//  3. placement decisions over a simulated cluster of 1,000 workers x 10,000 models;
//     target p99 < 1 ms.
//
// Each figure is printed with its ratio to the target (>= 1.0x: met).
//
//   bench_control [--acquires N] [--clients C] [--seconds S] [--model-mib M] [--deploys K]
//                 [--state sqlite|memory|both]
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "base/env.h"
#include "bench/bench_util.h"
#include "daemon/pipeline_instance_loader.h"
#include "daemon/rpc_util.h"
#include "daemon/scheduler_policy.h"
#include "daemon/servers.h"
#include "loadstar/v1/controller.grpc.pb.h"
#include "spdlog/spdlog.h"
#include "store/safetensors_writer.h"
#include "store/store.h"

namespace loadstar {
namespace {

namespace v1 = loadstar::v1;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// An HF checkpoint of `mib` MiB of F16 layers, saved into a store at `root` as `name`.
absl::Status MakeModel(const std::string& root, const std::string& name, int mib) {
  std::string hf = JoinPath(root, "hf-" + std::to_string(mib));
  absl::Status s = Env::Default()->CreateDirs(hf);
  if (!s.ok()) return s;
  std::vector<store::TensorInput> tensors;
  int layers = std::max(1, mib / 8);
  for (int i = 0; i < layers; ++i) {
    store::TensorSpec spec{fmt::format("model.layers.{}.mlp.up_proj.weight", i), DType::kF16,
                           {2048, 2048}};
    tensors.push_back({spec, [](uint64_t off, char* dst, size_t n) {
                         for (size_t j = 0; j < n; ++j) dst[j] = static_cast<char>((off + j) * 31);
                         return absl::OkStatus();
                       }});
  }
  s = store::WriteSafetensors(Env::Default(), JoinPath(hf, "model.safetensors"), std::move(tensors));
  if (!s.ok()) return s;
  s = WriteFileAtomically(Env::Default(), JoinPath(hf, "config.json"), R"({"model_type":"bench"})");
  if (!s.ok()) return s;
  auto store = store::Store::Open({root});
  if (!store.ok()) return store.status();
  return (*store)->Save(hf, name).status();
}

struct Cluster {
  std::unique_ptr<daemon::ControllerServer> controller;
  std::unique_ptr<daemon::WorkerServer> worker;
  std::unique_ptr<v1::Controller::Stub> stub;
};

// A controller with its state in `dir` and one worker over the store at `store_root`.
absl::StatusOr<Cluster> StartCluster(const std::string& dir, const std::string& store_root,
                                     const std::string& state) {
  Cluster c;
  daemon::ControllerServerOptions co;
  co.address = "127.0.0.1:0";
  co.state = state == "sqlite" ? "sqlite:" + JoinPath(dir, "state.db") : state;
  co.heartbeat_interval_seconds = 0.2;
  co.heartbeat_timeout_seconds = 2;
  auto controller = daemon::ControllerServer::Start(co);
  if (!controller.ok()) return controller.status();
  c.controller = std::move(*controller);
  daemon::PipelineInstanceLoaderOptions lo;
  lo.store_dir = store_root;
  lo.devices = "host:2";
  lo.host_device_bytes = 2ull << 30;
  auto loader = daemon::PipelineInstanceLoader::Create(lo);
  if (!loader.ok()) return loader.status();
  daemon::WorkerServerOptions wo;
  wo.worker_id = "w1";
  wo.controller_address = c.controller->address();
  auto worker = daemon::WorkerServer::Start(wo, std::move(*loader));
  if (!worker.ok()) return worker.status();
  c.worker = std::move(*worker);
  c.stub = v1::Controller::NewStub(daemon::MakeChannel(c.controller->address()));
  for (int i = 0; i < 100 && c.controller->controller()->ListWorkers().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return c;
}

// Deploys `model` with one instance and waits for it; returns (wall ms, worker load ms).
absl::StatusOr<std::pair<double, double>> DeployToReady(Cluster& c, const std::string& model) {
  auto start = Clock::now();
  grpc::ClientContext ctx;
  v1::DeployRequest req;
  req.set_config_yaml(fmt::format("model: {}\nauto_scaling_config: {{min_instances: 1}}\n", model));
  v1::DeployResponse resp;
  grpc::Status s = c.stub->Deploy(&ctx, req, &resp);
  if (!s.ok()) return daemon::FromGrpc(s);
  grpc::ClientContext wctx;
  v1::NameRequest name;
  name.set_name(model);
  auto reader = c.stub->WatchDeployment(&wctx, name);
  v1::DeploymentEvent e;
  while (reader->Read(&e)) {
    if (e.state() == "ready") break;
    if (e.state() == "failed") return absl::InternalError(e.message());
  }
  double wall = Ms(Clock::now() - start);
  wctx.TryCancel();
  reader->Finish();
  v1::Deployment d = *c.controller->controller()->GetDeployment(model);
  double load = d.instances(0).load_seconds() * 1000;
  grpc::ClientContext dctx;
  v1::DeleteResponse dresp;
  c.stub->Delete(&dctx, name, &dresp);
  return std::make_pair(wall, load);
}

std::shared_ptr<grpc::Channel> OwnChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // its own connection, as a client has
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// One Acquire and its Release; the Acquire's latency in ms, or < 0 on failure.
double AcquireRelease(v1::Controller::Stub& stub, const std::string& deployment) {
  grpc::ClientContext actx;
  actx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::AcquireRequest areq;
  areq.set_deployment(deployment);
  v1::Lease lease;
  auto start = Clock::now();
  grpc::Status s = stub.Acquire(&actx, areq, &lease);
  double t = Ms(Clock::now() - start);
  if (!s.ok()) {
    std::fprintf(stderr, "acquire: %s\n", s.error_message().c_str());
    return -1;
  }
  grpc::ClientContext rctx;
  v1::LeaseRequest rreq;
  rreq.set_lease_id(lease.lease_id());
  v1::ReleaseResponse rresp;
  s = stub.Release(&rctx, rreq, &rresp);
  if (!s.ok()) {
    std::fprintf(stderr, "release: %s\n", s.error_message().c_str());
    return -1;
  }
  return t;
}

// 1a and 1b on a running cluster with deployment bench/small ready.
bool BenchAcquire(Cluster& c, const std::string& state, int acquires, int clients,
                  double seconds) {
  std::vector<double> ms;
  for (int i = 0; i < acquires + 100; ++i) {
    double t = AcquireRelease(*c.stub, "bench/small");
    if (t < 0) return false;
    if (i >= 100) ms.push_back(t);  // the first ones include the cold start
  }
  double p99 = Percentile(ms, 0.99);
  std::printf("warm Acquire, 1 client, %s state (%d calls, Release after each): p50 %.3f ms, "
              "p99 %.3f ms; target p99 < 2 ms: %.2fx %s\n",
              state.c_str(), acquires, Percentile(ms, 0.5), p99, 2.0 / p99,
              p99 < 2 ? "PASS" : "FAIL");

  std::atomic<bool> stop{false}, failed{false};
  std::atomic<uint64_t> pairs{0};
  std::vector<std::vector<double>> latencies(clients);
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      auto stub = v1::Controller::NewStub(OwnChannel(c.controller->address()));
      while (!stop) {
        double t = AcquireRelease(*stub, "bench/small");
        if (t < 0) {
          failed = true;
          return;
        }
        latencies[i].push_back(t);
        ++pairs;
      }
    });
  }
  // Half a second to connect and warm up, then the measured window.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  daemon::StateWriter::Stats w0 = c.controller->controller()->state_write_stats();
  uint64_t p0 = pairs;
  double c0 = bench::CpuSeconds();
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  uint64_t p1 = pairs;
  double wall = Ms(Clock::now() - t0) / 1000;
  double cpu = bench::CpuSeconds() - c0;
  daemon::StateWriter::Stats w1 = c.controller->controller()->state_write_stats();
  stop = true;
  for (std::thread& t : threads) t.join();
  if (failed) return false;
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  double rate = static_cast<double>(p1 - p0) / wall;
  uint64_t commits = w1.commits - w0.commits, batches = w1.batches - w0.batches;
  std::printf("Acquire+Release, %d clients, %s state (%.1f s): %.0f pairs/s; target >= 5,000/s: "
              "%.2fx %s (Acquire p50 %.3f ms, p99 %.3f ms; %.2f CPU-s/s in this process; "
              "%llu writes in %llu commits, %.1f per commit, store busy %.0f%% of the time)\n",
              clients, state.c_str(), wall, rate, rate / 5000, rate >= 5000 ? "PASS" : "FAIL",
              Percentile(all, 0.5), Percentile(all, 0.99), cpu / wall,
              static_cast<unsigned long long>(batches), static_cast<unsigned long long>(commits),
              commits > 0 ? static_cast<double>(batches) / static_cast<double>(commits) : 0.0,
              100 * (w1.commit_seconds - w0.commit_seconds) / wall);
  return true;
}

// 4. The state store alone: SQLite commits of `group` lease writes (put then delete), as
// the StateWriter makes them; what one Acquire+Release costs the store.
void BenchStateStore(const std::string& dir, int group) {
  auto store = daemon::OpenSqliteStateStore(JoinPath(dir, fmt::format("commit-{}.db", group)));
  if (!store.ok()) return;
  const int rounds = std::max(200, 20000 / group);
  double c0 = bench::CpuSeconds();
  auto start = Clock::now();
  for (int r = 0; r < rounds; ++r) {
    std::vector<daemon::StateBatch> puts, deletes;
    for (int i = 0; i < group; ++i) {
      std::string id = fmt::format("lease-{}-{}", r, i);
      puts.push_back({daemon::LeaseRecord{id, "bench/small", "i-1", 1, 30}});
      deletes.push_back({daemon::LeaseDeletion{id}});
    }
    (*store)->Commit(puts);
    (*store)->Commit(deletes);
  }
  double wall_us = Ms(Clock::now() - start) * 1000 / (2.0 * rounds);
  double cpu_us = (bench::CpuSeconds() - c0) * 1e6 / (2.0 * rounds);
  std::printf("SQLite state store, %d lease write(s) per commit: %.1f us per commit (%.1f us CPU), "
              "%.1f us per write\n",
              group, wall_us, cpu_us, wall_us / group);
}

void BenchPlacement() {
  constexpr int kWorkers = 1000, kModels = 10000, kDecisions = 20000;
  std::mt19937_64 rng(42);
  daemon::ClusterSnapshot cluster;
  for (int w = 0; w < kWorkers; ++w) {
    daemon::WorkerSnapshot& s = cluster.workers.emplace_back();
    s.worker_id = fmt::format("worker-{}", w);
    for (int d = 0; d < 8; ++d) {
      uint64_t total = 80ull << 30;
      s.devices.push_back({total, total - (rng() % (60ull << 30))});
    }
    s.disk_bandwidth = 1e9 + static_cast<double>(rng() % 4'000'000'000ull);
    s.queue_wait_seconds = static_cast<double>(rng() % 1000) / 100.0;
    // Each worker's disk holds 500 models, 20 of them in host cache, 4 resident.
    for (int m = 0; m < 500; ++m) {
      std::string name = fmt::format("model-{}", rng() % kModels);
      s.models_on_disk.insert(name);
      if (m < 20) s.models_in_host_cache.insert(name);
      if (m < 4) s.resident.insert(name);
    }
  }
  daemon::LoadTimePolicy policy;
  std::vector<double> us;
  int placed = 0;
  for (int i = 0; i < kDecisions; ++i) {
    daemon::PlacementRequest r;
    r.model = r.deployment = fmt::format("model-{}", rng() % kModels);
    r.checkpoint_bytes = (1 + rng() % 140) * (1ull << 30);
    r.loaded_bytes = r.checkpoint_bytes;
    r.num_gpus = 1 + static_cast<uint32_t>(rng() % 4);
    auto start = Clock::now();
    daemon::Placement p = policy.Place(cluster, r);
    us.push_back(Ms(Clock::now() - start) * 1000);
    placed += p.kind == daemon::Placement::Kind::kPlaced;
  }
  std::printf("placement (%d workers x %d models, %d decisions, %d placed): p50 %.1f us, "
              "p99 %.1f us (target p99 < 1000 us) %s\n",
              kWorkers, kModels, kDecisions, placed, Percentile(us, 0.5), Percentile(us, 0.99),
              Percentile(us, 0.99) < 1000 ? "PASS" : "FAIL");
}

int Main(int argc, char** argv) {
  int acquires = 5000, model_mib = 64, deploys = 5, clients = 16;
  double seconds = 3;
  std::string state = "both";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--acquires")) acquires = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--clients")) clients = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--model-mib")) model_mib = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--deploys")) deploys = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--state")) state = argv[i + 1];  // sqlite | memory | both
  }
  spdlog::set_level(spdlog::level::warn);
  // As the loadstar binary runs its daemons (deploy/main.cc).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  char tmpl[] = "/tmp/bench-control-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string root = JoinPath(dir, "store");
  for (auto [name, mib] : {std::pair<std::string, int>{"bench/small", 1},
                           std::pair<std::string, int>{"bench/model", model_mib}}) {
    absl::Status s = MakeModel(root, name, mib);
    if (!s.ok()) {
      std::fprintf(stderr, "making %s: %s\n", name.c_str(), std::string(s.message()).c_str());
      return 1;
    }
  }
  std::vector<std::string> states;
  if (state == "both") {
    states = {"sqlite", "memory"};
  } else {
    states = {state};
  }
  for (size_t k = 0; k < states.size(); ++k) {
    const std::string& st = states[k];
    std::string run_dir = JoinPath(dir, st);
    if (!Env::Default()->CreateDirs(run_dir).ok()) return 1;
    auto cluster = StartCluster(run_dir, root, st);  // both clusters read the one store
    if (!cluster.ok()) {
      std::fprintf(stderr, "cluster: %s\n", std::string(cluster.status().message()).c_str());
      return 1;
    }
    if (k == 0) {
      // 2. Deploy-to-ready overhead (first, while nothing else is loaded). One warm-up
      // deploy brings the file into the page cache so every measured load is the same
      // warm load.
      std::vector<double> overhead, walls, loads;
      for (int i = 0; i <= deploys; ++i) {
        auto r = DeployToReady(*cluster, "bench/model");
        if (!r.ok()) {
          std::fprintf(stderr, "deploy: %s\n", std::string(r.status().message()).c_str());
          return 1;
        }
        if (i == 0) continue;
        walls.push_back(r->first);
        loads.push_back(r->second);
        overhead.push_back(r->first - r->second);
      }
      std::printf("deploy-to-ready (%d MiB, host:2, page cache warm, %s state, %d runs): wall "
                  "p50 %.2f ms, loader %.2f ms, overhead p50 %.2f ms max %.2f ms; target < 20 "
                  "ms: %.2fx %s\n",
                  model_mib, st.c_str(), deploys, Percentile(walls, 0.5), Percentile(loads, 0.5),
                  Percentile(overhead, 0.5), Percentile(overhead, 1.0),
                  20 / Percentile(overhead, 1.0), Percentile(overhead, 1.0) < 20 ? "PASS" : "FAIL");
    }
    // 1. Warm Acquire: one instance that every lease shares.
    grpc::ClientContext ctx;
    v1::DeployRequest req;
    req.set_config_yaml(
        "model: bench/small\nauto_scaling_config: {min_instances: 1, target: 1000000}\n");
    v1::DeployResponse resp;
    grpc::Status deployed = cluster->stub->Deploy(&ctx, req, &resp);
    if (!deployed.ok()) {
      std::fprintf(stderr, "deploy: %s\n", deployed.error_message().c_str());
      return 1;
    }
    if (!BenchAcquire(*cluster, st, acquires, clients, seconds)) return 1;
    cluster->worker->Shutdown();
    cluster->controller->Shutdown();
  }
  for (int group : {1, 16}) BenchStateStore(dir, group);
  Env::Default()->RemoveRecursively(dir).IgnoreError();

  // 3. Placement.
  BenchPlacement();
  return 0;
}

}  // namespace
}  // namespace loadstar

int main(int argc, char** argv) { return loadstar::Main(argc, argv); }
