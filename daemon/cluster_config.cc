#include "daemon/cluster_config.h"

#include <fmt/format.h>

#include "base/status_macros.h"
#include "daemon/etcd_client.h"
#include "daemon/yaml_fields.h"

namespace loadstar::daemon {
namespace {

// tls: {cert, key, ca}, the same on both daemons. The files are checked when the daemon
// builds its credentials (daemon/tls.h), with errors naming the file.
absl::Status ParseTls(YamlMap& m, TlsFiles* tls) {
  ASSIGN_OR_RETURN(YamlMap t, YamlMap::Open(m.Node("tls"), "tls"));
  RETURN_IF_ERROR(t.GetString("cert", &tls->cert));
  RETURN_IF_ERROR(t.GetString("key", &tls->key));
  RETURN_IF_ERROR(t.GetString("ca", &tls->ca));
  RETURN_IF_ERROR(t.Finish());
  if (tls->cert.empty() != tls->key.empty()) {
    return absl::InvalidArgumentError("tls: cert and key go together");
  }
  if (tls->enabled() && tls->cert.empty()) {
    return absl::InvalidArgumentError("tls: a daemon needs its own cert and key (ca alone is "
                                      "not enough)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ControllerConfig> ParseControllerConfig(std::string_view yaml) {
  ASSIGN_OR_RETURN(YAML::Node root, LoadYaml(std::string(yaml)));
  ASSIGN_OR_RETURN(YamlMap m, YamlMap::Open(root, ""));
  ControllerConfig c;
  RETURN_IF_ERROR(m.GetString("address", &c.address));
  RETURN_IF_ERROR(m.GetString("state", &c.state));
  RETURN_IF_ERROR(m.GetDouble("heartbeat_interval", &c.heartbeat_interval));
  RETURN_IF_ERROR(m.GetDouble("heartbeat_timeout", &c.heartbeat_timeout));
  RETURN_IF_ERROR(m.GetDouble("lease_ttl", &c.lease_ttl));
  uint32_t election_ttl = static_cast<uint32_t>(c.election_ttl);
  RETURN_IF_ERROR(m.GetUint("election_ttl", &election_ttl));
  c.election_ttl = election_ttl;
  RETURN_IF_ERROR(m.GetString("token_file", &c.token_file));
  RETURN_IF_ERROR(ParseTls(m, &c.tls));
  RETURN_IF_ERROR(m.GetString("metrics_address", &c.metrics_address));
  RETURN_IF_ERROR(m.Finish());
  if (c.state.rfind("etcd://", 0) == 0) {
    RETURN_IF_ERROR(ParseEtcdSpec(c.state).status());
  } else if (c.state != "memory" && (c.state.rfind("sqlite:", 0) != 0 || c.state.size() <= 7)) {
    return absl::InvalidArgumentError(fmt::format(
        "state: '{}' is not memory, sqlite:PATH or etcd://HOST:PORT[,...]/PREFIX", c.state));
  }
  if (!(c.heartbeat_interval > 0)) {
    return absl::InvalidArgumentError("heartbeat_interval: must be greater than 0");
  }
  if (!(c.heartbeat_timeout > c.heartbeat_interval)) {
    return absl::InvalidArgumentError(fmt::format(
        "heartbeat_timeout: {} must be greater than heartbeat_interval {}", c.heartbeat_timeout,
        c.heartbeat_interval));
  }
  if (!(c.lease_ttl > 0)) return absl::InvalidArgumentError("lease_ttl: must be greater than 0");
  if (c.election_ttl < 2) {
    return absl::InvalidArgumentError(fmt::format(
        "election_ttl: {} s is too short to keep a leader's etcd lease alive (at least 2)",
        c.election_ttl));
  }
  return c;
}

absl::StatusOr<WorkerConfig> ParseWorkerConfig(std::string_view yaml) {
  ASSIGN_OR_RETURN(YAML::Node root, LoadYaml(std::string(yaml)));
  ASSIGN_OR_RETURN(YamlMap m, YamlMap::Open(root, ""));
  WorkerConfig c;
  RETURN_IF_ERROR(m.GetString("worker_id", &c.worker_id));
  RETURN_IF_ERROR(m.GetString("address", &c.address));
  RETURN_IF_ERROR(m.GetString("controller", &c.controller));
  RETURN_IF_ERROR(m.GetString("store", &c.store));
  RETURN_IF_ERROR(m.GetString("devices", &c.devices));
  RETURN_IF_ERROR(m.GetBytes("device_memory", &c.device_memory));
  RETURN_IF_ERROR(m.GetBool("device_memory_pool", &c.device_memory_pool));
  RETURN_IF_ERROR(m.GetBytes("host_cache", &c.host_cache_bytes));
  RETURN_IF_ERROR(m.GetString("io_engine", &c.io_engine));
  RETURN_IF_ERROR(m.GetUint("threads", &c.threads));
  RETURN_IF_ERROR(m.GetBytes("chunk_size", &c.chunk_bytes));
  RETURN_IF_ERROR(m.GetUint("queue_depth", &c.queue_depth));
  bool direct = true;
  if (m.Has("direct_io")) {
    RETURN_IF_ERROR(m.GetBool("direct_io", &direct));
    c.direct_io = direct ? "on" : "off";
  }
  RETURN_IF_ERROR(m.GetBytes("max_read_bandwidth", &c.max_read_bandwidth));
  RETURN_IF_ERROR(m.GetString("token_file", &c.token_file));
  RETURN_IF_ERROR(ParseTls(m, &c.tls));
  RETURN_IF_ERROR(m.GetString("metrics_address", &c.metrics_address));
  RETURN_IF_ERROR(m.Finish());
  if (c.io_engine != "io_uring" && c.io_engine != "pread") {
    return absl::InvalidArgumentError(
        fmt::format("io_engine: '{}' is not io_uring or pread", c.io_engine));
  }
  if (c.chunk_bytes == 0 || c.chunk_bytes % 4096 != 0) {
    return absl::InvalidArgumentError(
        fmt::format("chunk_size: {} is not a positive multiple of 4 KiB", c.chunk_bytes));
  }
  if (c.devices != "auto" && c.devices != "cuda" && c.devices.rfind("host", 0) != 0) {
    return absl::InvalidArgumentError(
        fmt::format("devices: '{}' is not auto, cuda or host:N", c.devices));
  }
  return c;
}

}  // namespace loadstar::daemon
