#include "deploy/config_check.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <string>

#include "base/status_macros.h"
#include "daemon/rpc_util.h"
#include "daemon/tls.h"

namespace loadstar::cli {
namespace {

// HOST:PORT (HOST may be a bracketed IPv6 literal, or empty for every interface).
// `what` is the config key, so the error names it.
absl::Status CheckHostPort(const std::string& address, const std::string& what) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(fmt::format("{}: '{}' is not HOST:PORT", what, address));
  }
  std::string port = address.substr(colon + 1);
  int value = -1;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value < 0 ||
      value > 65535) {
    return absl::InvalidArgumentError(
        fmt::format("{}: '{}' has no port in 0..65535", what, address));
  }
  return absl::OkStatus();
}

// The files the daemon reads at start-up, read and checked the same way.
absl::Status CheckSecurityFiles(const std::string& token_file, const daemon::TlsFiles& tls) {
  absl::StatusOr<std::string> token = daemon::ReadTokenFile(token_file);
  if (!token.ok()) {
    return absl::Status(token.status().code(),
                        "token_file: " + std::string(token.status().message()));
  }
  if (tls.enabled()) {
    RETURN_IF_ERROR(daemon::MakeServerCredentials(tls, *token).status());
    RETURN_IF_ERROR(daemon::MakeChannelCredentials(tls).status());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckControllerConfig(const daemon::ControllerConfig& c) {
  RETURN_IF_ERROR(CheckHostPort(c.address, "address"));
  if (!c.metrics_address.empty()) {
    RETURN_IF_ERROR(CheckHostPort(c.metrics_address, "metrics_address"));
  }
  return CheckSecurityFiles(c.token_file, c.tls);
}

absl::Status CheckWorkerConfig(const daemon::WorkerConfig& c) {
  RETURN_IF_ERROR(CheckHostPort(c.address, "address"));
  // One controller, or the comma-separated controllers of an HA set (the worker follows
  // whichever leads).
  size_t begin = 0;
  while (true) {
    size_t comma = c.controller.find(',', begin);
    RETURN_IF_ERROR(CheckHostPort(c.controller.substr(begin, comma - begin), "controller"));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  if (!c.metrics_address.empty()) {
    RETURN_IF_ERROR(CheckHostPort(c.metrics_address, "metrics_address"));
  }
  return CheckSecurityFiles(c.token_file, c.tls);
}

absl::Status ReportCheck(const std::string& config_path, const absl::Status& status) {
  if (!status.ok()) {
    if (config_path.empty()) return status;
    return absl::Status(status.code(), config_path + ": " + std::string(status.message()));
  }
  std::printf("config OK\n");
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace loadstar::cli
