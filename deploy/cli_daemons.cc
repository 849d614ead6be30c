// `loadstar controller`, `loadstar worker` and `loadstar up`: run daemons in the
// foreground until SIGINT or SIGTERM, then shut down cleanly (in-flight loads are
// cancelled and their memory freed).
#include "deploy/cli_daemons.h"

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "base/env.h"
#include "base/status_macros.h"
#include "daemon/cluster_config.h"
#include "daemon/pipeline_instance_loader.h"
#include "daemon/rpc_util.h"
#include "daemon/servers.h"
#include "deploy/cli_common.h"
#include "deploy/config_check.h"
#include "deploy/tls_dir.h"

namespace loadstar::cli {
namespace {

using daemon::ControllerConfig;
using daemon::WorkerConfig;

// Blocks SIGINT/SIGTERM in this thread (and every thread started after, which inherit the
// mask); WaitForShutdownSignal then takes them synchronously.
void BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

// Prints the line scripts and tests wait for, then flushes.
void Announce(const std::string& what, const std::string& address) {
  std::printf("%s listening on %s\n", what.c_str(), address.c_str());
  std::fflush(stdout);
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  return ReadFileToString(Env::Default(), path, 1 << 20);
}

// --tls-cert/--tls-key/--tls-ca and --metrics-address, on every daemon command.
struct ServingFlags {
  daemon::TlsFiles tls;
  std::string metrics_address;
};

void AddServingFlags(CLI::App* cmd, ServingFlags* f) {
  cmd->add_option("--tls-cert", f->tls.cert, "TLS certificate (PEM) of this daemon");
  cmd->add_option("--tls-key", f->tls.key, "its private key (PEM)");
  cmd->add_option("--tls-ca", f->tls.ca,
                  "CA (PEM) that peers' certificates must chain to; on a listener this "
                  "requires client certificates (mTLS)");
  cmd->add_option("--metrics-address", f->metrics_address,
                  "serve Prometheus metrics at http://HOST:PORT/metrics (default: off)");
}

// Flags override the config file field by field.
void ApplyServingFlags(const ServingFlags& f, daemon::TlsFiles* tls, std::string* metrics) {
  if (!f.tls.cert.empty()) tls->cert = f.tls.cert;
  if (!f.tls.key.empty()) tls->key = f.tls.key;
  if (!f.tls.ca.empty()) tls->ca = f.tls.ca;
  if (!f.metrics_address.empty()) *metrics = f.metrics_address;
}

absl::StatusOr<std::unique_ptr<daemon::MetricsServer>> StartMetrics(const std::string& address) {
  if (address.empty()) return nullptr;
  ASSIGN_OR_RETURN(auto server, daemon::MetricsServer::Start(address));
  std::printf("metrics on http://%s/metrics\n", server->address().c_str());
  std::fflush(stdout);
  return server;
}

struct ControllerFlags {
  std::string config, addr, state, token_file;
  ServingFlags serving;
  double heartbeat_timeout = 0, heartbeat_interval = 0, lease_ttl = 0;
  int64_t election_ttl = 0;
  bool check = false;  // --check: validate and exit
};

absl::StatusOr<ControllerConfig> ResolveController(const ControllerFlags& f) {
  ControllerConfig c;
  if (!f.config.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadConfigFile(f.config));
    absl::StatusOr<ControllerConfig> parsed = daemon::ParseControllerConfig(text);
    if (!parsed.ok()) {
      return absl::Status(parsed.status().code(),
                          f.config + ": " + std::string(parsed.status().message()));
    }
    c = *parsed;
  }
  if (!f.addr.empty()) c.address = f.addr;
  if (!f.state.empty()) c.state = f.state;
  if (!f.token_file.empty()) c.token_file = f.token_file;
  if (f.heartbeat_timeout > 0) c.heartbeat_timeout = f.heartbeat_timeout;
  if (f.heartbeat_interval > 0) c.heartbeat_interval = f.heartbeat_interval;
  if (f.lease_ttl > 0) c.lease_ttl = f.lease_ttl;
  if (f.election_ttl > 0) c.election_ttl = f.election_ttl;
  if (c.election_ttl < 2) {
    return absl::InvalidArgumentError("--election-ttl: at least 2 seconds");
  }
  ApplyServingFlags(f.serving, &c.tls, &c.metrics_address);
  return c;
}

absl::StatusOr<std::unique_ptr<daemon::ControllerServer>> StartController(
    const ControllerConfig& c, daemon::MetricsServer* metrics) {
  ASSIGN_OR_RETURN(std::string token, daemon::ReadTokenFile(c.token_file));
  if (c.state.rfind("sqlite:", 0) == 0) {
    RETURN_IF_ERROR(Env::Default()->CreateDirs(DirName(c.state.substr(7))));
  }
  daemon::ControllerServerOptions o;
  o.address = c.address;
  o.state = c.state;
  o.token = token;
  o.tls = c.tls;
  o.metrics = metrics;
  o.heartbeat_interval_seconds = c.heartbeat_interval;
  o.heartbeat_timeout_seconds = c.heartbeat_timeout;
  o.default_lease_ttl_seconds = c.lease_ttl;
  o.election_ttl_seconds = c.election_ttl;
  return daemon::ControllerServer::Start(o);
}

constexpr const char* kDeviceMemoryPoolHelp =
    "true (default): each host device's memory is one shared-memory pool, populated at "
    "start and reused by every load (steady-state loads at memcpy speed; freed memory is "
    "zeroed); false: fresh shared memory per load";

struct WorkerFlags {
  std::string config, controller, addr, store, devices, id, token_file;
  ServingFlags serving;
  std::string host_cache_bytes, device_memory, max_read_bandwidth;
  std::string device_memory_pool;  // "true" | "false"; empty: the config's
  bool check = false;  // --check: validate and exit
};

absl::StatusOr<WorkerConfig> ResolveWorker(const WorkerFlags& f) {
  WorkerConfig c;
  if (!f.config.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadConfigFile(f.config));
    absl::StatusOr<WorkerConfig> parsed = daemon::ParseWorkerConfig(text);
    if (!parsed.ok()) {
      return absl::Status(parsed.status().code(),
                          f.config + ": " + std::string(parsed.status().message()));
    }
    c = *parsed;
  }
  if (!f.controller.empty()) c.controller = f.controller;
  if (!f.addr.empty()) c.address = f.addr;
  if (!f.store.empty() || c.store.empty()) c.store = ResolveStoreDir(f.store);
  if (!f.devices.empty()) c.devices = f.devices;
  if (!f.id.empty()) c.worker_id = f.id;
  if (!f.token_file.empty()) c.token_file = f.token_file;
  if (!f.host_cache_bytes.empty()) {
    ASSIGN_OR_RETURN(c.host_cache_bytes, daemon::ParseByteSize(f.host_cache_bytes, "--host-cache-bytes"));
  }
  if (!f.max_read_bandwidth.empty()) {
    ASSIGN_OR_RETURN(c.max_read_bandwidth,
                     daemon::ParseByteSize(f.max_read_bandwidth, "--max-read-bandwidth"));
  }
  if (!f.device_memory.empty()) {
    ASSIGN_OR_RETURN(c.device_memory, daemon::ParseByteSize(f.device_memory, "--device-memory"));
  }
  if (!f.device_memory_pool.empty()) c.device_memory_pool = f.device_memory_pool == "true";
  ApplyServingFlags(f.serving, &c.tls, &c.metrics_address);
  return c;
}

absl::StatusOr<std::unique_ptr<daemon::WorkerServer>> StartWorker(
    const WorkerConfig& c, bool register_with_controller, daemon::MetricsServer* metrics) {
  ASSIGN_OR_RETURN(std::string token, daemon::ReadTokenFile(c.token_file));
  daemon::PipelineInstanceLoaderOptions lo;
  lo.store_dir = c.store;
  lo.devices = c.devices;
  lo.host_device_bytes = c.device_memory;
  lo.host_device_pool = c.device_memory_pool;
  lo.host_cache_bytes = c.host_cache_bytes;
  lo.max_read_bandwidth = static_cast<double>(c.max_read_bandwidth);
  lo.pipeline.threads = static_cast<int>(c.threads);
  lo.pipeline.chunk_bytes = c.chunk_bytes;
  lo.pipeline.io.kind = c.io_engine;
  if (c.queue_depth > 0) lo.pipeline.io.queue_depth = static_cast<int>(c.queue_depth);
  lo.pipeline.io_mode = c.direct_io == "on"    ? loader::IoMode::kDirect
                        : c.direct_io == "off" ? loader::IoMode::kBuffered
                                               : loader::IoMode::kAuto;
  ASSIGN_OR_RETURN(auto loader, daemon::PipelineInstanceLoader::Create(lo));
  daemon::WorkerServerOptions wo;
  wo.worker_id = c.worker_id;
  wo.address = c.address;
  wo.controller_address = register_with_controller ? c.controller : "";
  wo.token = token;
  wo.tls = c.tls;
  wo.metrics = metrics;
  return daemon::WorkerServer::Start(wo, std::move(loader));
}

void AddControllerFlags(CLI::App* cmd, ControllerFlags* f) {
  cmd->add_option("--config", f->config, "cluster YAML (SPEC 3.4)");
  cmd->add_option("--state", f->state, "memory | sqlite:PATH | etcd://HOST:PORT[,...]/PREFIX");
  cmd->add_option("--token-file", f->token_file, "require this bearer token on every RPC");
  cmd->add_option("--heartbeat-timeout", f->heartbeat_timeout,
                  "seconds without a heartbeat before a worker is lost (default 3)");
  cmd->add_option("--heartbeat-interval", f->heartbeat_interval,
                  "seconds between worker heartbeats (default 1)");
  cmd->add_option("--lease-ttl", f->lease_ttl, "default lease TTL in seconds (default 30)");
  cmd->add_option("--election-ttl", f->election_ttl,
                  "with --state etcd://: seconds before a dead leader is replaced (default 5)");
}

}  // namespace

void RegisterDaemonCommands(CLI::App& app) {
  auto cf = std::make_shared<ControllerFlags>();
  CLI::App* controller = app.add_subcommand("controller", "run the controller");
  AddControllerFlags(controller, cf.get());
  AddServingFlags(controller, &cf->serving);
  controller->add_option("--addr", cf->addr, "listen address HOST:PORT (default 127.0.0.1:7070)");
  controller->add_flag("--check", cf->check,
                       "validate the config and the files it names, print 'config OK', exit");
  controller->callback([cf] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(ControllerConfig c, ResolveController(*cf));
      if (cf->check) return ReportCheck(cf->config, CheckControllerConfig(c));
      BlockShutdownSignals();
      ASSIGN_OR_RETURN(auto metrics, StartMetrics(c.metrics_address));
      ASSIGN_OR_RETURN(auto server, StartController(c, metrics.get()));
      Announce("controller", server->address());
      WaitForShutdownSignal();
      server->Shutdown();
      return absl::OkStatus();
    });
  });

  auto wf = std::make_shared<WorkerFlags>();
  CLI::App* worker = app.add_subcommand("worker", "run a worker");
  worker->add_option("--config", wf->config, "worker YAML (SPEC 3.4)");
  worker->add_option("--controller", wf->controller,
                    "controller HOST:PORT[,HOST:PORT...]: the leader is followed (default 127.0.0.1:7070)");
  worker->add_option("--addr", wf->addr, "listen address HOST:PORT (default 127.0.0.1:0)");
  worker->add_option("--store", wf->store, "store directory (default $LOADSTAR_STORE)");
  worker->add_option("--devices", wf->devices, "auto | cuda | host:N");
  worker->add_option("--device-memory", wf->device_memory, "memory per host device, e.g. 16GiB");
  worker->add_option("--device-memory-pool", wf->device_memory_pool, kDeviceMemoryPoolHelp)
      ->check(CLI::IsMember({"true", "false"}));
  worker->add_option("--host-cache-bytes", wf->host_cache_bytes,
                     "host (DRAM) cache size, e.g. 8GiB: models loaded from disk stay there, LRU");
  worker->add_option("--id", wf->id, "worker id (default HOSTNAME-PORT)");
  worker->add_option("--max-read-bandwidth", wf->max_read_bandwidth,
                     "cap store reads, bytes per second (e.g. 200MB)");
  worker->add_option("--token-file", wf->token_file, "bearer token for the controller and clients");
  AddServingFlags(worker, &wf->serving);
  worker->add_flag("--check", wf->check,
                   "validate the config and the files it names, print 'config OK', exit");
  worker->callback([wf] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(WorkerConfig c, ResolveWorker(*wf));
      if (wf->check) return ReportCheck(wf->config, CheckWorkerConfig(c));
      BlockShutdownSignals();
      ASSIGN_OR_RETURN(auto metrics, StartMetrics(c.metrics_address));
      ASSIGN_OR_RETURN(auto server,
                       StartWorker(c, /*register_with_controller=*/true, metrics.get()));
      Announce("worker", server->address());
      WaitForShutdownSignal();
      server->Shutdown();
      return absl::OkStatus();
    });
  });

  auto uf = std::make_shared<ControllerFlags>();
  auto uw = std::make_shared<WorkerFlags>();
  auto workers = std::make_shared<int>(1);
  auto tls_dir = std::make_shared<std::string>();
  CLI::App* up = app.add_subcommand("up", "a local cluster: controller + N workers in one process");
  AddControllerFlags(up, uf.get());
  AddServingFlags(up, &uf->serving);
  up->add_option("--tls-dir", *tls_dir,
                 "TLS and mTLS for everything: generate a throwaway CA and certificates in DIR "
                 "(kept while valid); clients use them with --tls-dir DIR or $LOADSTAR_TLS_DIR")
      ->excludes(up->get_option("--tls-cert"))
      ->excludes(up->get_option("--tls-key"))
      ->excludes(up->get_option("--tls-ca"));
  up->add_option("--addr", uf->addr,
                 "controller address HOST:PORT (default $LOADSTAR_ADDR or 127.0.0.1:7070)");
  up->add_option("--workers", *workers, "number of workers (default 1)")->check(CLI::Range(1, 64));
  up->add_option("--devices", uw->devices, "devices per worker (default host:2)");
  up->add_option("--device-memory", uw->device_memory, "memory per host device (default 16GiB)");
  up->add_option("--device-memory-pool", uw->device_memory_pool, kDeviceMemoryPoolHelp)
      ->check(CLI::IsMember({"true", "false"}));
  up->add_option("--store", uw->store, "store directory shared by the workers");
  up->add_option("--host-cache-bytes", uw->host_cache_bytes, "host cache per worker");
  up->callback([uf, uw, workers, tls_dir] {
    Run([&]() -> absl::Status {
      if (!tls_dir->empty()) {
        RETURN_IF_ERROR(EnsureTlsDir(*tls_dir));
        uf->serving.tls = daemon::DaemonTlsFiles(*tls_dir);
      }
      // The address the CLI dials (SPEC §3.1): --addr, else $LOADSTAR_ADDR.
      if (uf->addr.empty()) {
        if (const char* env = std::getenv("LOADSTAR_ADDR"); env != nullptr && *env != '\0') {
          uf->addr = env;
        }
      }
      if (uf->state.empty()) {
        uf->state = "sqlite:" + JoinPath(DirName(ResolveStoreDir(uw->store)), "controller.db");
      }
      if (uw->devices.empty()) uw->devices = "host:2";
      uw->token_file = uf->token_file;
      uw->serving.tls = uf->serving.tls;  // one endpoint for all: metrics stay with the controller
      ASSIGN_OR_RETURN(ControllerConfig cc, ResolveController(*uf));
      ASSIGN_OR_RETURN(WorkerConfig wc, ResolveWorker(*uw));
      BlockShutdownSignals();
      ASSIGN_OR_RETURN(auto metrics, StartMetrics(cc.metrics_address));
      ASSIGN_OR_RETURN(auto controller, StartController(cc, metrics.get()));
      wc.controller = controller->address();
      std::vector<std::unique_ptr<daemon::WorkerServer>> servers;
      for (int i = 0; i < *workers; ++i) {
        wc.worker_id = "worker-" + std::to_string(i);
        ASSIGN_OR_RETURN(auto w, StartWorker(wc, true, metrics.get()));
        servers.push_back(std::move(w));
      }
      Announce("controller", controller->address());
      for (const auto& w : servers) Announce("worker", w->address());
      std::printf("state %s, store %s; stop with Ctrl-C\n", cc.state.c_str(), wc.store.c_str());
      if (!tls_dir->empty()) {
        std::printf("TLS with client certificates: export LOADSTAR_TLS_DIR=%s\n",
                    tls_dir->c_str());
      }
      std::fflush(stdout);
      WaitForShutdownSignal();
      for (auto& w : servers) w->Shutdown();
      controller->Shutdown();
      return absl::OkStatus();
    });
  });
}

}  // namespace loadstar::cli
