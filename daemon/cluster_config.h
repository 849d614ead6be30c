// Controller and worker configs (SPEC §3.4), YAML with the same rules as deployment
// configs: key paths in errors, unknown keys rejected. Command-line flags override them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "daemon/tls.h"

namespace loadstar::daemon {

struct ControllerConfig {
  std::string address = "127.0.0.1:7070";
  std::string state = "memory";  // memory | sqlite:PATH | etcd://HOST:PORT[,...]/PREFIX
  int64_t election_ttl = 5;      // etcd: seconds before a dead leader is replaced
  double heartbeat_interval = 1;
  double heartbeat_timeout = 3;
  double lease_ttl = 30;
  std::string token_file;
  TlsFiles tls;                 // tls: {cert, key, ca}; ca on a server means mTLS
  std::string metrics_address;  // empty: no metrics endpoint
};

struct WorkerConfig {
  std::string worker_id;
  std::string address = "127.0.0.1:0";
  std::string controller = "127.0.0.1:7070";
  std::string store;      // empty: the CLI default (ResolveStoreDir)
  std::string devices = "auto";
  uint64_t device_memory = 16ull << 30;  // per emulated host device
  // Host devices' memory is one pool per device, created and populated at start and
  // reused by every load (HostDevice::CreatePooled); false: fresh shm per allocation.
  bool device_memory_pool = true;
  uint64_t host_cache_bytes = 0;
  std::string io_engine = "io_uring";    // io_uring | pread
  uint32_t threads = 0;                  // 0: number of cores
  uint64_t chunk_bytes = 4ull << 20;
  uint32_t queue_depth = 0;              // 0: the engine's default
  std::string direct_io = "auto";        // auto | on | off
  uint64_t max_read_bandwidth = 0;       // bytes/s; 0: unlimited
  std::string token_file;
  TlsFiles tls;                 // its listener, and its calls to the controller
  std::string metrics_address;  // empty: no metrics endpoint
};

absl::StatusOr<ControllerConfig> ParseControllerConfig(std::string_view yaml);
absl::StatusOr<WorkerConfig> ParseWorkerConfig(std::string_view yaml);

}  // namespace loadstar::daemon
