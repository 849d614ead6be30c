// Writes the seed corpora of the RPC fuzzers (rpc_harness.h framing) into
// <dir>/controller_rpc_fuzzer/ and <dir>/worker_rpc_fuzzer/: short scripts of valid
// requests that reach deep states (a lease renewed and released, a deployment updated
// while leased, an instance loaded quantized then read and probed), for the fuzzer to
// mutate. Regenerate after changing the protos or the framing:
//   build-fuzz/tests/fuzz/write_rpc_seeds tests/fuzz/corpus
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "base/env.h"
#include "loadstar/v1/controller.pb.h"
#include "loadstar/v1/worker.pb.h"
#include "tests/fuzz/rpc_harness.h"

namespace {

using namespace loadstar;
using loadstar::fuzz::EncodeStep;
using loadstar::fuzz::kCarryIds;

struct Seed {
  std::string name;
  std::string bytes;
};

bool WriteSeeds(const std::string& dir, const std::vector<Seed>& seeds) {
  if (!Env::Default()->CreateDirs(dir).ok()) return false;
  for (const Seed& s : seeds) {
    std::ofstream out(dir + "/" + s.name, std::ios::binary);
    out << s.bytes;
    if (!out) return false;
  }
  return true;
}

v1::DeployRequest Deploy(const std::string& yaml, bool replace = false) {
  v1::DeployRequest r;
  r.set_config_yaml(yaml);
  r.set_replace(replace);
  return r;
}
v1::NameRequest Name(const std::string& name) {
  v1::NameRequest r;
  r.set_name(name);
  return r;
}
v1::AcquireRequest Acquire(const std::string& deployment, double ttl = 0) {
  v1::AcquireRequest r;
  r.set_deployment(deployment);
  r.set_ttl_seconds(ttl);
  return r;
}

std::vector<Seed> ControllerSeeds() {
  const auto& c = fuzz::ServiceNamed("loadstar.v1.Controller");
  const v1::LeaseRequest lease;  // lease_id carried from the Acquire (kCarryIds)
  std::vector<Seed> seeds;
  seeds.push_back({"lease-cycle.bin",
                   EncodeStep(c, "Deploy", Deploy("model: m\n")) +
                       EncodeStep(c, "Acquire", Acquire("m", 5)) +
                       EncodeStep(c, "RenewLease", lease, kCarryIds) +
                       EncodeStep(c, "GetLease", lease, kCarryIds) +
                       EncodeStep(c, "Release", lease, kCarryIds) +
                       EncodeStep(c, "GetDeployment", Name("m"))});
  seeds.push_back(
      {"update-while-leased.bin",
       EncodeStep(c, "Deploy", Deploy("model: m\nauto_scaling_config: {max_instances: 2}\n")) +
           EncodeStep(c, "Acquire", Acquire("m")) +
           EncodeStep(c, "Deploy",
                      Deploy("model: m\nquantization: nf4\n"
                             "auto_scaling_config: {min_instances: 1, max_instances: 2}\n",
                             true)) +
           EncodeStep(c, "ListDeployments", v1::ListDeploymentsRequest()) +
           EncodeStep(c, "Delete", Name("m")) +
           EncodeStep(c, "Release", lease, kCarryIds)});
  seeds.push_back({"watch.bin",
                   EncodeStep(c, "Deploy",
                              Deploy("name: two\nmodel: m\nnum_gpus: 2\n"
                                     "backend_config: {device_map: tensor_parallel}\n"
                                     "auto_scaling_config: {min_instances: 1}\n"
                                     "placement_config: {spread: required, memory_pool: [w2]}\n")) +
                       EncodeStep(c, "WatchDeployment", Name("two")) +
                       EncodeStep(c, "ListWorkers", v1::ListWorkersRequest())});
  v1::WorkerInfo info;
  info.set_worker_id("w3");
  info.set_address("w3:1");
  v1::DeviceInfo* d = info.add_devices();
  d->set_name("host:0");
  d->set_kind("host");
  d->set_total_bytes(64 << 20);
  d->set_free_bytes(64 << 20);
  v1::StoredModel* m = info.add_models();
  m->set_name("m");
  m->set_bytes(1 << 20);
  v1::InstanceReport* inst = info.add_instances();
  inst->set_instance_id("i-unknown");
  inst->set_deployment("m");
  inst->set_model("m");
  inst->set_state("ready");
  inst->add_devices("host:0");
  seeds.push_back({"workers.bin", EncodeStep(c, "RegisterWorker", info) +
                                      EncodeStep(c, "Deploy", Deploy("model: m\n")) +
                                      EncodeStep(c, "Heartbeat", info) +
                                      EncodeStep(c, "ListWorkers", v1::ListWorkersRequest()) +
                                      EncodeStep(c, "GetDeployment", Name("m"))});
  return seeds;
}

v1::LoadInstanceRequest Load(const std::string& id, const std::string& method,
                             std::vector<uint32_t> devices, uint32_t num_gpus = 1) {
  v1::LoadInstanceRequest r;
  r.set_instance_id(id);
  r.set_deployment("tiny");
  r.mutable_spec()->set_model("tiny");
  r.mutable_spec()->set_num_gpus(num_gpus);
  if (!method.empty()) {
    r.mutable_spec()->mutable_quantization()->set_method(method);
    r.mutable_spec()->mutable_quantization()->set_blocksize(64);
  }
  for (uint32_t d : devices) r.add_devices(d);
  return r;
}
v1::InstanceRequest Instance(const std::string& id) {
  v1::InstanceRequest r;
  r.set_instance_id(id);
  return r;
}
v1::ReadTensorRequest Read(const std::string& id, const std::string& tensor, uint64_t offset,
                           uint64_t length) {
  v1::ReadTensorRequest r;
  r.set_instance_id(id);
  r.set_tensor(tensor);
  r.set_offset(offset);
  r.set_length(length);
  return r;
}
v1::ReadModelFileRequest File(const std::string& model, const std::string& name) {
  v1::ReadModelFileRequest r;
  r.set_model(model);
  r.set_name(name);
  return r;
}
v1::ModelRequest Model(const std::string& model) {
  v1::ModelRequest r;
  r.set_model(model);
  return r;
}

std::vector<Seed> WorkerSeeds() {
  const auto& w = fuzz::ServiceNamed("loadstar.v1.Worker");
  std::vector<Seed> seeds;
  seeds.push_back({"load-read.bin", EncodeStep(w, "LoadInstance", Load("i1", "", {0})) +
                                        EncodeStep(w, "GetInstance", Instance("i1")) +
                                        EncodeStep(w, "ReadTensor",
                                                   Read("i1", "model.norm.weight", 8, 100)) +
                                        EncodeStep(w, "ReadModelFile",
                                                   File("tiny", "tokenizer.json")) +
                                        EncodeStep(w, "UnloadInstance", Instance("i1"))});
  v1::ProbeRequest probe;
  probe.set_instance_id("q");
  probe.set_rows(2);
  seeds.push_back(
      {"nf4-probe.bin",
       EncodeStep(w, "LoadInstance", Load("q", "nf4", {1})) + EncodeStep(w, "Probe", probe) +
           EncodeStep(w, "ReadTensor", Read("q", "model.layers.0.mlp.up_proj.weight.absmax", 0, 0)) +
           EncodeStep(w, "GetInstance", Instance("q"))});
  probe.set_instance_id("t");
  seeds.push_back({"int8.bin", EncodeStep(w, "LoadInstance", Load("t", "int8", {0})) +
                                   EncodeStep(w, "Probe", probe) +
                                   EncodeStep(w, "ReadTensor",
                                              Read("t", "model.layers.0.mlp.up_proj.SCB", 4, 64)) +
                                   EncodeStep(w, "UnloadInstance", Instance("t"))});
  v1::LoadInstanceRequest tp = Load("p", "", {0, 1}, 2);
  tp.mutable_spec()->set_device_map("tensor_parallel");
  seeds.push_back({"tensor-parallel.bin",
                   EncodeStep(w, "LoadInstance", tp) + EncodeStep(w, "GetInstance", Instance("p")) +
                       EncodeStep(w, "ReadTensor", Read("p", "lm_head.weight", 0, 64))});
  seeds.push_back({"cache.bin", EncodeStep(w, "Prefetch", Model("tiny")) +
                                    EncodeStep(w, "ListModels", v1::ListModelsRequest()) +
                                    EncodeStep(w, "Evict", Model("tiny")) +
                                    EncodeStep(w, "ReadModelFile",
                                               File("tiny", "../tiny/manifest.json"))});
  return seeds;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  if (!WriteSeeds(dir + "/controller_rpc_fuzzer", ControllerSeeds()) ||
      !WriteSeeds(dir + "/worker_rpc_fuzzer", WorkerSeeds())) {
    std::fprintf(stderr, "write_rpc_seeds: cannot write under %s\n", dir.c_str());
    return 1;
  }
  return 0;
}
