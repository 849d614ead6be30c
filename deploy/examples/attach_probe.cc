// A C++ consumer of loadstar (SPEC §3.5): leases an instance of a quantized deployment,
// maps its memory with zero copies, and runs the quantized linear layer (the Probe path,
// daemon/probe.h, quant/'s CPU twin of the GPU layer) on a mapped weight, printing how far
// its outputs are from the unquantized checkpoint's (read from the same host's store).
//
//   loadstar-attach-example opt-125m --store build/run/store [--tensor NAME] [--rows 4]
//
// Exit code 0 and one line per figure on success; 1 and "loadstar-attach-example: ..." on
// any error.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/status_macros.h"
#include "daemon/probe.h"
#include "deploy/client/client.h"
#include "deploy/client/mapped_instance.h"
#include "store/store.h"

namespace {

namespace v1 = loadstar::v1;
using loadstar::client::Client;
using loadstar::client::MappedInstance;

struct Flags {
  std::string deployment, addr, store, tensor;
  uint32_t rows = 4;
};

absl::Status Run(const Flags& f) {
  std::string store_dir = f.store;
  if (store_dir.empty()) {
    const char* env = std::getenv("LOADSTAR_STORE");
    if (env == nullptr) return absl::InvalidArgumentError("--store DIR (or $LOADSTAR_STORE) is required");
    store_dir = env;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<loadstar::store::Store> store,
                   loadstar::store::Store::Open({store_dir, loadstar::Env::Default()}));
  ASSIGN_OR_RETURN(std::unique_ptr<Client> client, Client::Connect({.address = f.addr}));
  ASSIGN_OR_RETURN(std::unique_ptr<loadstar::client::Lease> lease, client->Acquire(f.deployment));
  ASSIGN_OR_RETURN(v1::InstanceHandle handle, lease->Handle());
  ASSIGN_OR_RETURN(std::unique_ptr<MappedInstance> mapped, MappedInstance::Map(handle));
  std::printf("instance %s of %s on %s: %d tensors, %llu bytes mapped (quantization %s)\n",
              handle.instance_id().c_str(), handle.model().c_str(),
              lease->lease().instance().worker_address().c_str(), handle.tensors_size(),
              static_cast<unsigned long long>(handle.bytes()),
              handle.spec().quantization().method().c_str());
  // The probe reads every tensor straight from the mapping.
  loadstar::daemon::TensorReader read = [&](const std::string& name, uint64_t offset,
                                            uint64_t n, char* dst) -> absl::Status {
    const loadstar::client::TensorView* v = mapped->Find(name);
    if (v == nullptr) return absl::NotFoundError(fmt::format("no tensor '{}'", name));
    if (v->kind != "host") {
      return absl::FailedPreconditionError(
          fmt::format("'{}' is in GPU memory; this example computes on the CPU", name));
    }
    if (offset > v->size || n > v->size - offset) {
      return absl::OutOfRangeError(fmt::format("read past the end of '{}'", name));
    }
    std::memcpy(dst, static_cast<const char*>(v->data) + offset, n);
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(v1::ProbeResponse probe,
                   loadstar::daemon::ProbeQuantizedWeight(handle, read, handle.spec(), *store,
                                                          f.tensor, f.rows));
  std::printf("tensor %s\nmax_abs_error %.6g\nmean_abs_error %.6g\nrelative_error %.6g\n",
              probe.tensor().c_str(), probe.max_abs_error(), probe.mean_abs_error(),
              probe.relative_error());
  mapped.reset();  // unmap before the lease ends: the bytes are only guaranteed under it
  return lease->Release();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Map a quantized loadstar instance and run its quantized linear layer"};
  Flags f;
  app.add_option("deployment", f.deployment, "deployment to lease")->required();
  app.add_option("--addr", f.addr, "controller HOST:PORT (default $LOADSTAR_ADDR)");
  app.add_option("--store", f.store, "the worker's store directory (default $LOADSTAR_STORE)");
  app.add_option("--tensor", f.tensor, "quantized weight (default: the first one)");
  app.add_option("--rows", f.rows, "activation rows")->check(CLI::Range(1, 4096));
  CLI11_PARSE(app, argc, argv);
  absl::Status s = Run(f);
  if (!s.ok()) {
    std::fprintf(stderr, "loadstar-attach-example: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
