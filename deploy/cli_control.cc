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
#include <thread>
#include <vector>

#include "base/env.h"
#include "base/status_macros.h"
#include "daemon/controller_endpoints.h"
#include "daemon/rpc_util.h"
#include "deploy/cli_common.h"
#include "deploy/cli_daemons.h"
#include "loadstar/v1/controller.grpc.pb.h"
#include "loadstar/v1/worker.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace loadstar::cli {
namespace {

namespace v1 = loadstar::v1;

struct ClientFlags {
  std::string addr;
  std::string token_file;
  ClientTlsFlags tls;
  std::string output = "text";
};

void AddClientFlags(CLI::App* cmd, ClientFlags* f) {
  cmd->add_option("--addr", f->addr, "controller HOST:PORT[,HOST:PORT...] (default $LOADSTAR_ADDR or 127.0.0.1:7070)");
  cmd->add_option("--token-file", f->token_file, "bearer token file (default $LOADSTAR_TOKEN_FILE)");
  AddClientTlsFlags(cmd, &f->tls);
}

// A controller stub plus the token to attach to every call.
struct Client {
  std::unique_ptr<v1::Controller::Stub> stub;
  daemon::TokenAuth auth{""};
  std::string address;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  bool tls = false;

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
    if (absl::IsUnavailable(status)) return Unreachable("controller at " + address, status, tls);
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
  daemon::TlsFiles tls = f.tls.Resolve();
  c.tls = tls.enabled();
  ASSIGN_OR_RETURN(c.credentials, daemon::MakeChannelCredentials(tls));
  // A list of controllers (HA): talk to the one that leads. When none answers, the error
  // names every address given (with the TLS hints of Unreachable); one address is dialled
  // by the command's first call, whose error names it (Check).
  ASSIGN_OR_RETURN(std::vector<std::string> addresses, daemon::SplitAddresses(c.address));
  absl::StatusOr<daemon::ControllerConnection> connection =
      daemon::ConnectToController(std::move(addresses), {c.credentials, c.auth});
  if (!connection.ok()) {
    return Unreachable("controller at " + c.address, connection.status(), c.tls);
  }
  c.address = connection->address;
  c.stub = v1::Controller::NewStub(connection->channel);
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
  std::printf("\n%-20s %-24s %-12s %-14s %-10s %-6s %-12s %-10s %-11s %-10s %s\n", "INSTANCE",
              "DEPLOYMENT", "WORKER", "DEVICES", "STATE", "LEASES", "QUANT", "SOURCE", "TIER",
              "MEMORY", "LOAD");
  for (const v1::Deployment& d : deployments) {
    for (const v1::Instance& i : d.instances()) {
      std::string load = i.state() == "ready" ? fmt::format("{:.3f}s", i.load_seconds())
                         : i.bytes_total() > 0
                             ? fmt::format("{:.0f}%", 100.0 * i.bytes_done() / i.bytes_total())
                             : "-";
      std::string state = i.outdated() ? i.state() + "*" : i.state();
      // TIER: where the load read its bytes (disk | host_cache | device_copy).
      std::printf("%-20s %-24s %-12s %-14s %-10s %-6u %-12s %-10s %-11s %-10s %s\n",
                  i.instance_id().c_str(), d.name().c_str(), i.worker_id().c_str(),
                  Join(i.devices()).c_str(), state.c_str(), i.leases(),
                  i.quantization().c_str(), i.source().empty() ? "-" : i.source().c_str(),
                  i.tier().empty() ? "-" : i.tier().c_str(),
                  FormatBytes(i.device_bytes()).c_str(), load.c_str());
    }
  }
  bool any_outdated = false;
  for (const v1::Deployment& d : deployments) {
    for (const v1::Instance& i : d.instances()) any_outdated |= i.outdated();
  }
  if (any_outdated) std::printf("(* loaded with a config an update replaced; being rolled)\n");
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
  std::string name, model, config, quantization;
  int num_gpus = -1, min_instances = -1, max_instances = -1;
  double keep_alive = -1, target = -1, wait_seconds = 600;
  bool no_wait = false, replace = false;
};

// The deployment YAML: --config (if any) with the flags applied over it. The controller
// validates the result, so errors name key paths whether they came from the file or flags.
// `base`: a config to start from instead of --config (an update given flags only).
absl::StatusOr<std::string> BuildDeployYaml(const DeployFlags& f, std::string base = "") {
  YAML::Node root(YAML::NodeType::Map);
  std::string source = "the current config";
  if (!f.config.empty()) {
    ASSIGN_OR_RETURN(base, ReadFileToString(Env::Default(), f.config, 1 << 20));
    source = f.config;
  }
  if (!base.empty()) {
    try {
      root = YAML::Load(base);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(fmt::format("{}: invalid YAML at line {}: {}", source,
                                                    e.mark.line + 1, e.msg));
    }
    if (!root.IsMap()) return absl::InvalidArgumentError(source + ": expected a mapping");
  }
  if (!f.name.empty()) {
    if (root["name"] && root["name"].as<std::string>() != f.name) {
      return absl::InvalidArgumentError(fmt::format(
          "name: the config names '{}', the command line '{}'", root["name"].as<std::string>(),
          f.name));
    }
    root["name"] = f.name;
  }
  if (!f.model.empty()) root["model"] = f.model;
  if (f.num_gpus >= 0) root["num_gpus"] = f.num_gpus;
  if (!f.quantization.empty()) {
    // The flag replaces whatever quantization the config had.
    if (root["backend_config"] && root["backend_config"].IsMap()) {
      root["backend_config"].remove("quantization_config");
    }
    root["quantization"] = f.quantization;
  }
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
    if (e.state() == "failed" && e.message().ends_with("rescheduling")) {
      // The controller places a new instance by itself: say so and keep waiting.
      std::fprintf(stderr, "%s\n", e.message().c_str());
      instances.erase(e.instance_id());
      continue;
    }
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

// The deployment fields both `deploy` and `update` take. Numbers are range-checked here:
// -1 is "not given", never a value a user can type.
void AddDeployFlags(CLI::App* cmd, DeployFlags* f) {
  AddClientFlags(cmd, &f->client);
  cmd->add_option("--config", f->config, "deployment YAML (SPEC 3.2)");
  cmd->add_option("--num-gpus", f->num_gpus, "devices per instance")->check(CLI::Range(1, 1024));
  cmd->add_option("--quantization", f->quantization,
                  "none|int8|fp4|nf4 (or bitsandbytes, bitsandbytes-nf4, bitsandbytes-fp4)");
  cmd->add_option("--min-instances", f->min_instances, "instances kept loaded (0: scale to zero)")
      ->check(CLI::Range(0, 100000));
  cmd->add_option("--max-instances", f->max_instances, "upper bound of instances")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--keep-alive", f->keep_alive, "idle seconds before scaling down")
      ->check(kNonNegative);
  cmd->add_option("--target", f->target, "in-flight leases per instance")
      ->check(kPositive);
  cmd->add_flag("--no-wait", f->no_wait, "return once accepted, before instances are ready");
  cmd->add_option("--wait-seconds", f->wait_seconds, "how long to wait for min instances")
      ->check(kPositive);
  AddOutputFlag(cmd, &f->client.output);
}

// After an update: waits until min_instances instances run the new config.
absl::Status WaitRolled(const Client& c, const std::string& name, double seconds) {
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  Progress progress("update " + name);
  while (true) {
    v1::NameRequest req;
    req.set_name(name);
    v1::Deployment d;
    RETURN_IF_ERROR(c.Check(c.stub->GetDeployment(c.Context().get(), req, &d)));
    uint32_t ready = 0, outdated = 0, leased_outdated = 0;
    uint64_t done = 0, total = 0;
    for (const v1::Instance& i : d.instances()) {
      if (i.outdated()) {
        ++outdated;
        leased_outdated += i.leases() > 0;
        continue;
      }
      ready += i.state() == "ready";
      done += i.bytes_done();
      total += i.bytes_total();
    }
    progress.Update(done, total, fmt::format("{}/{} on the new config, {} old", ready,
                                             d.min_instances(), outdated));
    if (ready >= d.min_instances() && outdated == leased_outdated) {
      progress.Finish();
      if (outdated > 0) {
        std::fprintf(stderr, "%u old instance(s) still leased; they unload when released\n",
                     outdated);
      }
      return absl::OkStatus();
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(fmt::format(
          "update of '{}' not finished in {} s: {} of {} instances on the new config ready, "
          "{} old left{}", name, seconds, ready, d.min_instances(), outdated,
          d.message().empty() ? "" : " (" + d.message() + ")"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

absl::Status RunUpdate(const Client& c, const DeployFlags& f, const std::string& yaml) {
  v1::DeployRequest req;
  req.set_config_yaml(yaml);
  req.set_replace(true);
  v1::DeployResponse resp;
  RETURN_IF_ERROR(c.Check(c.stub->Deploy(c.Context().get(), req, &resp)));
  if (!f.no_wait) {
    SayOnInterrupt(fmt::format("the update of {} goes on in the cluster (`loadstar status {}`)",
                               f.name, f.name));
    RETURN_IF_ERROR(WaitRolled(c, f.name, f.wait_seconds));
    SayOnInterrupt("");
  }
  if (f.client.output == "json") {
    v1::NameRequest get;
    get.set_name(f.name);
    v1::Deployment d;
    RETURN_IF_ERROR(c.Check(c.stub->GetDeployment(c.Context().get(), get, &d)));
    std::printf("%s\n", ProtoToJson(d).c_str());
  } else {
    std::printf("updated %s\n", f.name.c_str());
  }
  return absl::OkStatus();
}

// `prefetch` / `evict MODEL [--worker W]`: the host cache of one worker, or of every live
// worker whose store holds the model.
void RegisterCacheCommand(CLI::App& app, const std::string& verb, const std::string& help) {
  struct CacheFlags {
    ClientFlags client;
    std::string model, worker;
  };
  auto f = std::make_shared<CacheFlags>();
  CLI::App* cmd = app.add_subcommand(verb, help);
  AddClientFlags(cmd, &f->client);
  cmd->add_option("model", f->model, "store name of the model")->required();
  cmd->add_option("--worker", f->worker, "one worker id (default: every worker holding it)");
  cmd->callback([f, verb] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Client c, Connect(f->client));
      v1::ListWorkersResponse workers;
      RETURN_IF_ERROR(c.Check(c.stub->ListWorkers(c.Context().get(), {}, &workers)));
      int done = 0;
      for (const v1::WorkerStatus& w : workers.workers()) {
        const v1::WorkerInfo& info = w.info();
        bool holds = false;
        for (const v1::StoredModel& m : info.models()) holds |= m.name() == f->model;
        if (!f->worker.empty() ? info.worker_id() != f->worker : (!holds || w.state() != "alive")) {
          continue;
        }
        if (w.state() != "alive") {
          return absl::UnavailableError(fmt::format("worker {} is {}", info.worker_id(), w.state()));
        }
        auto stub = v1::Worker::NewStub(daemon::MakeChannel(info.address(), c.credentials));
        v1::ModelRequest req;
        req.set_model(f->model);
        v1::CacheResponse resp;
        auto ctx = c.Context(600);
        grpc::Status s = verb == "prefetch" ? stub->Prefetch(ctx.get(), req, &resp)
                                            : stub->Evict(ctx.get(), req, &resp);
        absl::Status st = daemon::FromGrpc(s);
        if (!st.ok()) {
          return absl::Status(st.code(), fmt::format("worker {}: {}", info.worker_id(),
                                                     std::string(st.message())));
        }
        std::printf("%s %s on %s: host cache now %s\n", verb == "prefetch" ? "prefetched" : "evicted",
                    f->model.c_str(), info.worker_id().c_str(),
                    FormatBytes(resp.host_cache_used()).c_str());
        ++done;
      }
      if (done == 0) {
        return absl::NotFoundError(
            f->worker.empty()
                ? fmt::format("no live worker holds model '{}' in its store", f->model)
                : fmt::format("worker '{}' is not registered", f->worker));
      }
      return absl::OkStatus();
    });
  });
}

// The sum of live leases over a deployment's instances (0 if it cannot be read).
uint32_t LiveLeases(const Client& c, const std::string& name) {
  v1::NameRequest req;
  req.set_name(name);
  v1::Deployment d;
  if (!c.stub->GetDeployment(c.Context().get(), req, &d).ok()) return 0;
  uint32_t leases = 0;
  for (const v1::Instance& i : d.instances()) leases += i.leases();
  return leases;
}

}  // namespace

void RegisterControlCommands(CLI::App& app) {
  RegisterDaemonCommands(app);

  auto df = std::make_shared<DeployFlags>();
  CLI::App* deploy = app.add_subcommand("deploy", "deploy a model (serverless by default)");
  AddDeployFlags(deploy, df.get());
  deploy->add_option("--model", df->model, "store name of the model");
  deploy->add_option("--name", df->name, "deployment name (default: the model's)");
  deploy->add_flag("--replace", df->replace,
                   "roll an existing deployment of that name to this config (as `update`)");
  deploy->callback([df] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::string yaml, BuildDeployYaml(*df));
      ASSIGN_OR_RETURN(Client c, Connect(df->client));
      v1::DeployRequest req;
      req.set_config_yaml(yaml);
      req.set_replace(df->replace);
      v1::DeployResponse resp;
      RETURN_IF_ERROR(c.Check(c.stub->Deploy(c.Context().get(), req, &resp)));
      if (!df->no_wait) {
        const std::string& name = resp.deployment().name();
        SayOnInterrupt(fmt::format(
            "{} stays deployed and its instances keep loading (`loadstar status {}`; "
            "`loadstar delete {}` stops them)", name, name, name));
        RETURN_IF_ERROR(WaitReady(c, resp.deployment(), df->wait_seconds));
        SayOnInterrupt("");
      }
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

  auto uf = std::make_shared<DeployFlags>();
  CLI::App* update = app.add_subcommand(
      "update", "roll a deployment to a new config (new instances load before old ones go)");
  AddDeployFlags(update, uf.get());
  update->add_option("name", uf->name, "deployment name")->required();
  update->add_option("--model", uf->model, "store name of the model (default: the config's)");
  update->callback([uf] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Client c, Connect(uf->client));
      v1::NameRequest req;
      req.set_name(uf->name);
      v1::Deployment current;
      RETURN_IF_ERROR(c.Check(c.stub->GetDeployment(c.Context().get(), req, &current)));
      // Without --config the flags apply over the deployment's current config.
      ASSIGN_OR_RETURN(std::string yaml,
                       BuildDeployYaml(*uf, uf->config.empty() ? current.config_yaml() : ""));
      return RunUpdate(c, *uf, yaml);
    });
  });

  struct DeleteFlags {
    ClientFlags client;
    std::vector<std::string> names;
    bool force = false;
  };
  auto del = std::make_shared<DeleteFlags>();
  CLI::App* remove = app.add_subcommand("delete", "delete deployments (unloads their instances)");
  AddClientFlags(remove, &del->client);
  remove->add_option("names", del->names, "deployment names")->required();
  remove->add_flag("--force", del->force, "no warning for deployments with live leases");
  remove->callback([del] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Client c, Connect(del->client));
      // Every name is tried; each gets its own line, and the first error is the result.
      absl::Status first;
      size_t failed = 0;
      for (const std::string& name : del->names) {
        uint32_t leases = del->force ? 0 : LiveLeases(c, name);
        v1::NameRequest req;
        req.set_name(name);
        v1::DeleteResponse resp;
        absl::Status s = c.Check(c.stub->Delete(c.Context().get(), req, &resp));
        if (!s.ok()) {
          std::fprintf(stderr, "loadstar: %s\n", std::string(s.message()).c_str());
          if (first.ok()) first = s;
          ++failed;
          continue;
        }
        std::printf("deleted %s\n", name.c_str());
        if (leases > 0) {
          std::fprintf(stderr,
                       "warning: %s has %u live lease(s); its instances unload when they are "
                       "released or expire (--force hides this)\n",
                       name.c_str(), leases);
        }
      }
      if (!first.ok()) {
        // Already printed per name; exit non-zero without printing it again.
        return absl::Status(first.code(), fmt::format("{} of {} deployments not deleted",
                                                      failed, del->names.size()));
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
        j["deployments"] = ProtoToJsonValue(out)["deployments"];
        j["workers"] = ProtoToJsonValue(workers)["workers"];
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
  acquire->add_option("--ttl", af->ttl, "lease TTL in seconds (default: the controller's)")
      ->check(kPositive);
  acquire->add_option("--timeout", af->timeout, "seconds to wait for a ready instance")
      ->check(kPositive);
  AddOutputFlag(acquire, &af->client.output);
  acquire->callback([af] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Client c, Connect(af->client));
      v1::AcquireRequest req;
      req.set_deployment(af->name);
      req.set_ttl_seconds(af->ttl);
      v1::Lease lease;
      SayOnInterrupt(fmt::format(
          "a cold start of {} that began goes on in the cluster (`loadstar status {}`)",
          af->name, af->name));
      // A cold start shows the same progress as deploy, from the deployment's events.
      grpc::ClientContext watch_ctx;
      c.auth.Apply(&watch_ctx);
      std::thread watcher([&] {
        v1::NameRequest name;
        name.set_name(af->name);
        auto reader = c.stub->WatchDeployment(&watch_ctx, name);
        Progress progress("acquire " + af->name);
        v1::DeploymentEvent e;
        bool shown = false;
        while (reader->Read(&e)) {
          if (e.state() == "loading" && e.bytes_total() > 0) {
            progress.Update(e.bytes_done(), e.bytes_total(), "cold start");
            shown = true;
          } else if (e.state() == "ready" && shown) {
            progress.Finish();
          }
        }
        reader->Finish();
      });
      grpc::Status acquired = c.stub->Acquire(c.Context(af->timeout).get(), req, &lease);
      watch_ctx.TryCancel();
      watcher.join();
      SayOnInterrupt("");
      RETURN_IF_ERROR(c.Check(acquired));
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

  auto nf = std::make_shared<std::pair<ClientFlags, std::string>>();
  CLI::App* renew = app.add_subcommand("renew", "renew a lease for another TTL");
  AddClientFlags(renew, &nf->first);
  renew->add_option("lease_id", nf->second, "lease id")->required();
  AddOutputFlag(renew, &nf->first.output);
  renew->callback([nf] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Client c, Connect(nf->first));
      v1::LeaseRequest req;
      req.set_lease_id(nf->second);
      v1::Lease lease;
      RETURN_IF_ERROR(c.Check(c.stub->RenewLease(c.Context().get(), req, &lease)));
      if (nf->first.output == "json") {
        std::printf("%s\n", ProtoToJson(lease).c_str());
      } else {
        std::printf("renewed %s; expires in %.0fs\n", lease.lease_id().c_str(),
                    lease.ttl_seconds());
      }
      return absl::OkStatus();
    });
  });

  RegisterCacheCommand(app, "prefetch", "load a model into the host cache of its workers");
  RegisterCacheCommand(app, "evict", "drop a model from the host cache of its workers");

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
