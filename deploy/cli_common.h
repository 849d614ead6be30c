// Shared plumbing for the `loadstar` CLI: how a command reports failure, how data is
// printed (-o json), and progress display. Each command family lives in its own
// cli_<family>.cc and registers itself from main.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "daemon/tls.h"
#include "nlohmann/json.hpp"

namespace google::protobuf {
class Message;
}

namespace loadstar::cli {

// Runs a command body. On error prints one line "loadstar: <message>" to stderr and
// records exit code 1 (2 for INVALID_ARGUMENT, i.e. bad usage/input).
void Run(const std::function<absl::Status()>& body);
int ExitCode();

// While a command waits on work that goes on without it (a deploy's loads, a cold start),
// Ctrl-C prints "loadstar: interrupted; <message>" (what keeps running and how to stop it)
// and exits 130. An empty message restores the default handler.
void SayOnInterrupt(const std::string& message);

// Range checks for numeric flags whose errors read well ("--ttl: must be > 0, not -1").
extern const CLI::Validator kPositive;
extern const CLI::Validator kNonNegative;

// Adds `-o, --output text|json` to `cmd`, storing into `format`.
void AddOutputFlag(CLI::App* cmd, std::string* format);

// TLS flags of a client command: --tls-ca, --tls-cert, --tls-key, --tls-dir (resolved with
// the environment by daemon::ResolveClientTls).
struct ClientTlsFlags {
  daemon::TlsFiles files;
  std::string dir;
  daemon::TlsFiles Resolve() const { return daemon::ResolveClientTls(files, dir); }
};
void AddClientTlsFlags(CLI::App* cmd, ClientTlsFlags* f);

// A connection failure with what to check: the controller/worker address, and TLS on one
// side but not the other (gRPC reports both as UNAVAILABLE with a terse message).
absl::Status Unreachable(const std::string& who, const absl::Status& status, bool tls);

// The store directory: --store if given, else $LOADSTAR_STORE, else ~/.loadstar/store.
std::string ResolveStoreDir(const std::string& flag_value);

// Progress for long work: a redrawn bar on a terminal, plain lines otherwise (at most one
// per second, plus the final one). Thread-compatible: call from one thread.
class Progress {
 public:
  explicit Progress(std::string label, bool quiet = false);
  ~Progress();
  // `done` and `total` in bytes; `detail` is shown after the figures.
  void Update(uint64_t done, uint64_t total, std::string_view detail = "");
  void Finish();

 private:
  std::string label_;
  bool quiet_;
  bool tty_;
  bool finished_ = false;
  uint64_t start_us_;
  uint64_t last_print_us_ = 0;
};

// A message as JSON with the proto field names and every field present (zeros, false, empty
// strings and lists included, an absent sub-message as null), so scripts never meet a
// missing key. Every integer, 64-bit ones included, is a JSON number, in every command.
nlohmann::json ProtoToJsonValue(const google::protobuf::Message& m);
std::string ProtoToJson(const google::protobuf::Message& m);  // indented

// Human-readable bytes: "1.50 GiB".
std::string FormatBytes(uint64_t bytes);

// Registration, one per command family.
void RegisterStoreCommands(CLI::App& app);    // store save|ls|inspect|verify|rm
// Called by RegisterStoreCommands with the `store` subcommand (cli_export.cc).
void RegisterStoreExportCommand(CLI::App& store_cmd);  // store export
void RegisterLoadCommand(CLI::App& app);      // load
void RegisterControlCommands(CLI::App& app);  // up|controller|worker|deploy|delete|status|acquire|release
void RegisterInstanceCommand(CLI::App& app);  // instance

}  // namespace loadstar::cli
