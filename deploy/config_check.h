// `loadstar controller --check` / `loadstar worker --check`: validate a resolved daemon
// config and every file it names without starting anything, so an operator (or a CI job
// over the Kubernetes ConfigMaps) learns about a bad config before a rollout does.
//
// What is checked beyond the parser's own rules (key paths, unknown keys, value ranges):
//   - listen and metrics addresses are HOST:PORT with a port in 0..65535;
//   - the token file, when set, is readable and not empty;
//   - the TLS files, when set, are read and checked exactly as start-up does
//     (daemon::MakeServerCredentials for the listener, MakeChannelCredentials for the
//     daemon's own calls), so a missing, garbled or mismatched PEM is named.
// Not checked: anything the daemon creates or finds at run time (the SQLite database and
// its directory, the store directory, devices, reachability of the controller).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "daemon/cluster_config.h"

namespace loadstar::cli {

absl::Status CheckControllerConfig(const daemon::ControllerConfig& c);
absl::Status CheckWorkerConfig(const daemon::WorkerConfig& c);

// What `--check` reports: "config OK" on stdout for an OK `status`, else `status` with
// the config file's path in front (the CLI prints it as its one error line).
absl::Status ReportCheck(const std::string& config_path, const absl::Status& status);

}  // namespace loadstar::cli
