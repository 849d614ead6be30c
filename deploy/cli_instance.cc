// `loadstar instance INSTANCE_ID | --lease LEASE_ID [-o json]`: the handle an engine
// attaches with (SPEC §3.5): devices, allocations (shm names / CUDA IPC handles), the kept
// files and every tensor with its device, offset, dtype, shape and quantization state.
#include <fmt/format.h>

#include <cstdio>
#include <string>

#include "base/status_macros.h"
#include "deploy/cli_common.h"
#include "deploy/client/client.h"

namespace loadstar::cli {
namespace {

namespace v1 = loadstar::v1;

struct InstanceFlags {
  std::string instance_id, lease_id, addr, token_file, output = "text";
  ClientTlsFlags tls;
};

std::string Shape(const google::protobuf::RepeatedField<int64_t>& dims) {
  std::string out = "[";
  for (int i = 0; i < dims.size(); ++i) out += (i ? "," : "") + std::to_string(dims[i]);
  return out + "]";
}

std::string QuantSummary(const v1::TensorInfo& t) {
  if (!t.has_quant()) return "-";
  const v1::QuantState& q = t.quant();
  if (q.type() == "int8") return fmt::format("int8 of {} scb@{}", Shape(q.shape()), q.scb_offset());
  std::string s = fmt::format("{} bs{} of {} {} absmax@{}", q.type(), q.blocksize(), q.dtype(),
                              Shape(q.shape()), q.absmax_offset());
  if (q.nested_blocksize() > 0) {
    s += fmt::format(" nested bs{} offset {}", q.nested_blocksize(), q.nested_offset());
  }
  return s;
}

void PrintHandle(const v1::InstanceHandle& h, const std::string& worker_address) {
  const v1::Quantization& q = h.spec().quantization();
  std::printf("instance %s of %s on worker %s (%s)\n", h.instance_id().c_str(),
              h.model().c_str(), h.worker_id().c_str(), worker_address.c_str());
  std::printf("torch_dtype %s, quantization %s%s, %s in %d tensors\n",
              h.spec().torch_dtype().empty() ? "as stored" : h.spec().torch_dtype().c_str(),
              q.method().empty() ? "none" : q.method().c_str(),
              q.method().empty() || q.method() == "none"
                  ? ""
                  : fmt::format(" (blocksize {}{})", q.blocksize(),
                                q.double_quant() ? ", double quant" : "").c_str(),
              FormatBytes(h.bytes()).c_str(), h.tensors_size());
  std::printf("\n%-8s %-6s %-44s %s\n", "DEVICE", "KIND", "MEMORY", "SIZE");
  for (const v1::MemoryHandle& a : h.allocations()) {
    std::string name = a.device() < static_cast<uint32_t>(h.devices_size())
                           ? h.devices(a.device()).name() : std::to_string(a.device());
    std::string memory = a.kind() != "host" ? fmt::format("cuda ipc, {}", a.device_uuid())
                         : a.offset() == 0      ? a.shm_name()
                                                : fmt::format("{} @ {}", a.shm_name(), a.offset());
    std::printf("%-8s %-6s %-44s %s\n", name.c_str(), a.kind().c_str(), memory.c_str(),
                FormatBytes(a.size()).c_str());
  }
  std::printf("\nfiles:");
  for (const v1::ModelFile& f : h.files()) std::printf(" %s", f.name().c_str());
  std::printf("\n\n%-56s %-5s %-16s %-4s %-12s %-12s %s\n", "TENSOR", "DTYPE", "SHAPE", "DEV",
              "OFFSET", "SIZE", "QUANT");
  for (const v1::TensorInfo& t : h.tensors()) {
    std::printf("%-56s %-5s %-16s %-4u %-12llu %-12llu %s\n", t.name().c_str(),
                t.dtype().c_str(), Shape(t.shape()).c_str(), t.device(),
                static_cast<unsigned long long>(t.offset()),
                static_cast<unsigned long long>(t.size()), QuantSummary(t).c_str());
  }
}

absl::Status ShowInstance(const InstanceFlags& f) {
  if (f.instance_id.empty() == f.lease_id.empty()) {
    return absl::InvalidArgumentError("give either INSTANCE_ID or --lease LEASE_ID");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<client::Client> c,
                   client::Client::Connect({.address = f.addr,
                                            .token_file = f.token_file,
                                            .tls = f.tls.files,
                                            .tls_dir = f.tls.dir}));
  v1::Instance instance;
  if (!f.lease_id.empty()) {
    ASSIGN_OR_RETURN(v1::Lease lease, c->GetLease(f.lease_id));
    instance = lease.instance();
  } else {
    ASSIGN_OR_RETURN(instance, c->FindInstance(f.instance_id));
  }
  if (instance.state() != "ready") {
    return absl::FailedPreconditionError(fmt::format(
        "instance {} is {}, not ready: it has no memory to attach to yet",
        instance.instance_id(), instance.state()));
  }
  ASSIGN_OR_RETURN(v1::InstanceHandle handle,
                   c->GetInstance(instance.worker_address(), instance.instance_id()));
  if (f.output == "json") {
    std::printf("%s\n", ProtoToJson(handle).c_str());
  } else {
    PrintHandle(handle, instance.worker_address());
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterInstanceCommand(CLI::App& app) {
  auto f = std::make_shared<InstanceFlags>();
  CLI::App* cmd = app.add_subcommand(
      "instance", "the attach handle of a ready instance: memory, files, every tensor");
  cmd->add_option("instance_id", f->instance_id, "instance id (as `loadstar status` lists it)");
  cmd->add_option("--lease", f->lease_id, "the instance a live lease holds");
  cmd->add_option("--addr", f->addr, "controller HOST:PORT (default $LOADSTAR_ADDR or 127.0.0.1:7070)");
  cmd->add_option("--token-file", f->token_file, "bearer token file (default $LOADSTAR_TOKEN_FILE)");
  AddClientTlsFlags(cmd, &f->tls);
  AddOutputFlag(cmd, &f->output);
  cmd->callback([f] { Run([&] { return ShowInstance(*f); }); });
}

}  // namespace loadstar::cli
