// Client commands of the control plane: deploy, delete, status, acquire, release. They
// talk to the controller named by --addr or $LOADSTAR_ADDR (default 127.0.0.1:7070).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/env.h"
#include "base/status_macros.h"
#include "daemon/rpc_util.h"
#include "deploy/cli_common.h"
#include "deploy/cli_daemons.h"
#include "loadstar/v1/controller.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace loadstar::cli {
namespace {

namespace v1 = loadstar::v1;

struct ClientFlags {
  std::string addr;
  std::string token_file;
  std::string output = "text";
};

void AddClientFlags(CLI::App* cmd, ClientFlags* f) {
  cmd->add_option("--addr", f->addr, "controller HOST:PORT (default $LOADSTAR_ADDR or 127.0.0.1:7070)");
  cmd->add_option("--token-file", f->token_file, "bearer token file (default $LOADSTAR_TOKEN_FILE)");
}

// A controller stub plus the token to attach to every call.
struct Client {
  std::unique_ptr<v1::Controller::Stub> stub;
  daemon::TokenAuth auth{""};
  std::string address;

  // A context with the token and a deadline.
  std::unique_ptr<grpc::ClientContext> Context(double seconds = 30) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    auth.Apply(ctx.get());
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
    return ctx;
  }

  // Names the controller in connection errors so the user knows what was dialled.
  absl::Status Check(const grpc::Status& s) const {
    absl::Status status = daemon::FromGrpc(s);
    if (absl::IsUnavailable(status)) {
      return absl::UnavailableError(fmt::format("controller at {} is unreachable: {}", address,
                                                std::string(status.message())));
    }
    return status;
  }
};

absl::StatusOr<Client> Connect(const ClientFlags& f) {
  Client c;
  c.address = f.addr;
  if (c.address.empty()) {
    const char* env = std::getenv("LOADSTAR_ADDR");
    c.address = env != nullptr && *env != '\0' ? env : "127.0.0.1:7070";
  }
  std::string token_file = f.token_file;
  if (token_file.empty()) {
    if (const char* env = std::getenv("LOADSTAR_TOKEN_FILE")) token_file = env;
  }
  ASSIGN_OR_RETURN(std::string token, daemon::ReadTokenFile(token_file));
  c.auth = daemon::TokenAuth(token);
  c.stub = v1::Controller::NewStub(daemon::MakeChannel(c.address));
  return c;
}

std::string Ago(int64_t unix_ms) {
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  return fmt::format("{:.1f}s", static_cast<double>(now - unix_ms) / 1000);
}

std::string Join(const google::protobuf::RepeatedPtrField<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ",") + s;
  return out.empty() ? "-" : out;
}

void PrintDeployments(const std::vector<v1::Deployment>& deployments) {
  std::printf("%-32s %-9s %-8s %-8s %s\n", "DEPLOYMENT", "INSTANCES", "DESIRED", "MIN/MAX",
              "MESSAGE");
  for (const v1::Deployment& d : deployments) {
    std::printf("%-32s %-9d %-8u %-8s %s\n", d.name().c_str(), d.instances_size(),
                d.desired_instances(),
                fmt::format("{}/{}", d.min_instances(), d.max_instances()).c_str(),
                d.message().c_str());
  }
  std::printf("\n%-20s %-32s %-20s %-14s %-10s %-7s %s\n", "INSTANCE", "DEPLOYMENT", "WORKER",
              "DEVICES", "STATE", "LEASES", "LOAD");
  for (const v1::Deployment& d : deployments) {
    for (const v1::Instance& i : d.instances()) {
      std::string load = i.state() == "ready" ? fmt::format("{:.3f}s", i.load_seconds())
                         : i.bytes_total() > 0
                             ? fmt::format("{:.0f}%", 100.0 * i.bytes_done() / i.bytes_total())
                             : "-";
      std::printf("%-20s %-32s %-20s %-14s %-10s %-7u %s\n", i.instance_id().c_str(),
                  d.name().c_str(), i.worker_id().c_str(), Join(i.devices()).c_str(),
                  i.state().c_str(), i.leases(), load.c_str());
    }
  }
}

void PrintWorkers(const v1::ListWorkersResponse& workers) {
  std::printf("\n%-20s %-22s %-6s %-8s %-7s %s\n", "WORKER", "ADDRESS", "STATE", "DEVICES",
              "MODELS", "HEARTBEAT");
  for (const v1::WorkerStatus& w : workers.workers()) {
    std::printf("%-20s %-22s %-6s %-8d %-7d %s ago\n", w.info().worker_id().c_str(),
                w.info().address().c_str(), w.state().c_str(), w.info().devices_size(),
                w.info().models_size(), Ago(w.last_heartbeat_unix_ms()).c_str());
  }
}

struct DeployFlags {
  ClientFlags client;
  std::string model, config, quantization;
  int num_gpus = -1, min_instances = -1, max_instances = -1;
  double keep_alive = -1, target = -1, wait_seconds = 600;
  bool no_wait = false;
};

// The deployment YAML: --config (if any) with the flags applied over it. The controller
// validates the result, so errors name key paths whether they came from the file or flags.
absl::StatusOr<std::string> BuildDeployYaml(const DeployFlags& f) {
  YAML::Node root(YAML::NodeType::Map);
  if (!f.config.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(Env::Default(), f.config, 1 << 20));
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(fmt::format("{}: invalid YAML at line {}: {}", f.config,
                                                    e.mark.line + 1, e.msg));
    }
    if (!root.IsMap()) return absl::InvalidArgumentError(f.config + ": expected a mapping");
  }
  if (!f.model.empty()) root["model"] = f.model;
  if (f.num_gpus >= 0) root["num_gpus"] = f.num_gpus;
  if (!f.quantization.empty()) root["quantization"] = f.quantization;
  if (f.min_instances >= 0) root["auto_scaling_config"]["min_instances"] = f.min_instances;
  if (f.max_instances >= 0) root["auto_scaling_config"]["max_instances"] = f.max_instances;
  if (f.keep_alive >= 0) root["auto_scaling_config"]["keep_alive"] = f.keep_alive;
  if (f.target >= 0) root["auto_scaling_config"]["target"] = f.target;
  if (!root["model"]) return absl::InvalidArgumentError("model: is required (--model NAME)");
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str());
}

// Follows the deployment until its minimum instances are ready, with a progress bar.
absl::Status WaitReady(const Client& c, const v1::Deployment& d, double seconds) {
  if (d.min_instances() == 0) return absl::OkStatus();
  auto ctx = c.Context(seconds);
  v1::NameRequest req;
  req.set_name(d.name());
  auto reader = c.stub->WatchDeployment(ctx.get(), req);
  Progress progress("deploy " + d.name());
  std::map<std::string, v1::DeploymentEvent> instances;
  v1::DeploymentEvent e;
  while (reader->Read(&e)) {
    if (e.instance_id().empty()) continue;
    if (e.state() == "failed") {
      ctx->TryCancel();
      reader->Finish();
      return absl::UnavailableError(fmt::format("instance {} failed: {}", e.instance_id(), e.message()));
    }
    instances[e.instance_id()] = e;
    uint64_t done = 0, total = 0;
    uint32_t ready = 0;
    for (const auto& [id, ev] : instances) {
      done += ev.bytes_done();
      total += ev.bytes_total();
      ready += ev.state() == "ready";
    }
    progress.Update(done, total, fmt::format("{}/{} ready", ready, d.min_instances()));
    if (ready >= d.min_instances()) {
      progress.Finish();
      ctx->TryCancel();
      reader->Finish();
      return absl::OkStatus();
    }
  }
  return c.Check(reader->Finish());
}

}  // namespace

void RegisterControlCommands(CLI::App& app) {
  RegisterDaemonCommands(app);

  auto df = std::make_shared<DeployFlags>();
  CLI::App* deploy = app.add_subcommand("deploy", "deploy a model (serverless by default)");
  AddClientFlags(deploy, &df->client);
  deploy->add_option("--model", df->model, "store name of the model");
  deploy->add_option("--config", df->config, "deployment YAML (SPEC 3.2)");
  deploy->add_option("--num-gpus", df->num_gpus, "devices per instance");
  deploy->add_option("--quantization", df->quantization,
                     "none|int8|fp4|nf4 (or bitsandbytes, bitsandbytes-nf4, bitsandbytes-fp4)");
  deploy->add_option("--min-instances", df->min_instances, "instances kept loaded (0: scale to zero)");
  deploy->add_option("--max-instances", df->max_instances, "upper bound of instances");
  deploy->add_option("--keep-alive", df->keep_alive, "idle seconds before scaling down");
  deploy->add_option("--target", df->target, "in-flight leases per instance");
  deploy->add_flag("--no-wait", df->no_wait, "return once deployed, before instances are ready");
  deploy->add_option("--wait-seconds", df->wait_seconds, "how long to wait for min instances");
  AddOutputFlag(deploy, &df->client.output);
  deploy->callback([df] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::string yaml, BuildDeployYaml(*df));
      ASSIGN_OR_RETURN(Client c, Connect(df->client));
      v1::DeployRequest req;
      req.set_config_yaml(yaml);
      v1::DeployResponse resp;
      RETURN_IF_ERROR(c.Check(c.stub->Deploy(c.Context().get(), req, &resp)));
      if (!df->no_wait) RETURN_IF_ERROR(WaitReady(c, resp.deployment(), df->wait_seconds));
      if (df->client.output == "json") {
        std::printf("%s\n", ProtoToJson(resp.deployment()).c_str());
      } else {
        std::printf("deployed %s (min %u, max %u, keep_alive %gs)\n",
                    resp.deployment().name().c_str(), resp.deployment().min_instances(),
                    resp.deployment().max_instances(), resp.deployment().keep_alive_seconds());
      }
      return absl::OkStatus();
    });
  });

  auto del = std::make_shared<std::pair<ClientFlags, std::vector<std::string>>>();
  CLI::App* remove = app.add_subcommand("delete", "delete deployments (unloads their instances)");
  AddClientFlags(remove, &del->first);
  remove->add_option("names", del->second, "deployment names")->required();
  remove->callback([del] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Client c, Connect(del->first));
      for (const std::string& name : del->second) {
        v1::NameRequest req;
        req.set_name(name);
        v1::DeleteResponse resp;
        RETURN_IF_ERROR(c.Check(c.stub->Delete(c.Context().get(), req, &resp)));
        std::printf("deleted %s\n", name.c_str());
      }
      return absl::OkStatus();
    });
  });

  auto st = std::make_shared<std::pair<ClientFlags, std::string>>();
  CLI::App* status = app.add_subcommand("status", "deployments, instances and workers");
  AddClientFlags(status, &st->first);
  status->add_option("name", st->second, "one deployment");
  AddOutputFlag(status, &st->first.output);
  status->callback([st] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Client c, Connect(st->first));
      std::vector<v1::Deployment> deployments;
      v1::ListDeploymentsResponse all;
      if (!st->second.empty()) {
        v1::NameRequest req;
        req.set_name(st->second);
        v1::Deployment d;
        RETURN_IF_ERROR(c.Check(c.stub->GetDeployment(c.Context().get(), req, &d)));
        deployments.push_back(d);
      } else {
        RETURN_IF_ERROR(c.Check(c.stub->ListDeployments(c.Context().get(), {}, &all)));
        deployments.assign(all.deployments().begin(), all.deployments().end());
      }
      v1::ListWorkersResponse workers;
      RETURN_IF_ERROR(c.Check(c.stub->ListWorkers(c.Context().get(), {}, &workers)));
      if (st->first.output == "json") {
        v1::ListDeploymentsResponse out;
        for (const v1::Deployment& d : deployments) *out.add_deployments() = d;
        // {"deployments": [...], "workers": [...]}, empty lists included.
        nlohmann::json j;
        j["deployments"] = nlohmann::json::parse(ProtoToJson(out)).value("deployments", nlohmann::json::array());
        j["workers"] = nlohmann::json::parse(ProtoToJson(workers)).value("workers", nlohmann::json::array());
        std::printf("%s\n", j.dump(2).c_str());
        return absl::OkStatus();
      }
      PrintDeployments(deployments);
      PrintWorkers(workers);
      return absl::OkStatus();
    });
  });

  struct AcquireFlags {
    ClientFlags client;
    std::string name;
    double ttl = 0, timeout = 600;
  };
  auto af = std::make_shared<AcquireFlags>();
  CLI::App* acquire = app.add_subcommand("acquire", "lease a ready instance (cold-starts one if needed)");
  AddClientFlags(acquire, &af->client);
  acquire->add_option("name", af->name, "deployment")->required();
  acquire->add_option("--ttl", af->ttl, "lease TTL in seconds (default: the controller's)");
  acquire->add_option("--timeout", af->timeout, "seconds to wait for a ready instance");
  AddOutputFlag(acquire, &af->client.output);
  acquire->callback([af] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Client c, Connect(af->client));
      v1::AcquireRequest req;
      req.set_deployment(af->name);
      req.set_ttl_seconds(af->ttl);
      v1::Lease lease;
      RETURN_IF_ERROR(c.Check(c.stub->Acquire(c.Context(af->timeout).get(), req, &lease)));
      if (af->client.output == "json") {
        std::printf("%s\n", ProtoToJson(lease).c_str());
      } else {
        std::printf("lease %s\ninstance %s on %s (%s) devices %s%s\nexpires in %.0fs\n",
                    lease.lease_id().c_str(), lease.instance().instance_id().c_str(),
                    lease.instance().worker_id().c_str(),
                    lease.instance().worker_address().c_str(),
                    Join(lease.instance().devices()).c_str(),
                    lease.cold_start() ? " (cold start)" : "", lease.ttl_seconds());
      }
      return absl::OkStatus();
    });
  });

  auto rf = std::make_shared<std::pair<ClientFlags, std::string>>();
  CLI::App* release = app.add_subcommand("release", "release a lease");
  AddClientFlags(release, &rf->first);
  release->add_option("lease_id", rf->second, "lease id")->required();
  release->callback([rf] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Client c, Connect(rf->first));
      v1::LeaseRequest req;
      req.set_lease_id(rf->second);
      v1::ReleaseResponse resp;
      RETURN_IF_ERROR(c.Check(c.stub->Release(c.Context().get(), req, &resp)));
      std::printf("released %s\n", rf->second.c_str());
      return absl::OkStatus();
    });
  });
}

}  // namespace loadstar::cli
