#include "deploy/cli_common.h"

#include <fmt/format.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/strings/escaping.h"
#include "google/protobuf/message.h"

namespace loadstar::cli {
namespace {

int g_exit_code = 0;

uint64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void Run(const std::function<absl::Status()>& body) {
  absl::Status status = body();
  if (status.ok()) return;
  std::fprintf(stderr, "loadstar: %s\n", std::string(status.message()).c_str());
  g_exit_code = status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int ExitCode() { return g_exit_code; }

namespace {
// Written before the handler is installed; the handler only reads it (async-signal-safe).
char g_interrupt_line[1024];
size_t g_interrupt_length = 0;

void OnInterrupt(int) {
  (void)!::write(2, g_interrupt_line, g_interrupt_length);
  ::_exit(130);
}
}  // namespace

void SayOnInterrupt(const std::string& message) {
  struct sigaction sa {};
  if (message.empty()) {
    sa.sa_handler = SIG_DFL;
  } else {
    std::string line = "\nloadstar: interrupted; " + message + "\n";
    g_interrupt_length = std::min(line.size(), sizeof(g_interrupt_line));
    std::memcpy(g_interrupt_line, line.data(), g_interrupt_length);
    sa.sa_handler = OnInterrupt;
  }
  ::sigaction(SIGINT, &sa, nullptr);
}

namespace {
CLI::Validator NumberCheck(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v)) return "'" + text + "' is not a number";
        if (v > 0 || (zero_allowed && v == 0)) return "";
        return std::string(zero_allowed ? "must be >= 0" : "must be > 0") + ", not " + text;
      },
      zero_allowed ? "NUMBER >= 0" : "NUMBER > 0");
}
}  // namespace

const CLI::Validator kPositive = NumberCheck(false);
const CLI::Validator kNonNegative = NumberCheck(true);

void AddOutputFlag(CLI::App* cmd, std::string* format) {
  cmd->add_option("-o,--output", *format, "output format")
      ->check(CLI::IsMember({"text", "json"}))
      ->default_val("text");
}

void AddClientTlsFlags(CLI::App* cmd, ClientTlsFlags* f) {
  cmd->add_option("--tls-ca", f->files.ca, "CA to verify the daemons (default $LOADSTAR_TLS_CA)");
  cmd->add_option("--tls-cert", f->files.cert,
                  "client certificate for mTLS (default $LOADSTAR_TLS_CERT)");
  cmd->add_option("--tls-key", f->files.key, "its private key (default $LOADSTAR_TLS_KEY)");
  cmd->add_option("--tls-dir", f->dir,
                  "a `loadstar up --tls-dir` directory (default $LOADSTAR_TLS_DIR)");
}

absl::Status Unreachable(const std::string& who, const absl::Status& status, bool tls) {
  std::string message(status.message());
  std::string hint;
  if (message.find("ssl") != std::string::npos || message.find("SSL") != std::string::npos ||
      message.find("andshake") != std::string::npos) {
    hint = tls ? " (TLS handshake failed: check --tls-ca against the server's certificate, and "
                 "--tls-cert/--tls-key if it requires client certificates)"
               : " (it may require TLS: pass --tls-ca or --tls-dir)";
  } else if (!tls && message.find("Socket closed") != std::string::npos) {
    hint = " (the server closed the connection: it may require TLS; pass --tls-ca or --tls-dir)";
  } else if (tls) {
    hint = " (this client uses TLS: is the server started with a certificate?)";
  }
  return absl::UnavailableError(fmt::format("{} is unreachable: {}{}", who, message, hint));
}

std::string ResolveStoreDir(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  if (const char* env = std::getenv("LOADSTAR_STORE"); env != nullptr && *env != '\0') {
    return env;
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.loadstar/store";
}

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return absl::StrFormat("%d B", bytes);
  return absl::StrFormat("%.2f %s", value, kUnits[unit]);
}

Progress::Progress(std::string label, bool quiet)
    : label_(std::move(label)), quiet_(quiet), tty_(::isatty(STDERR_FILENO) != 0),
      start_us_(NowMicros()) {}

Progress::~Progress() { Finish(); }

void Progress::Update(uint64_t done, uint64_t total, std::string_view detail) {
  if (quiet_ || finished_) return;
  uint64_t now = NowMicros();
  bool last = total > 0 && done >= total;
  if (!last && now - last_print_us_ < (tty_ ? 100'000u : 1'000'000u)) return;
  last_print_us_ = now;
  double seconds = static_cast<double>(now - start_us_) / 1e6;
  double gbps = seconds > 0 ? static_cast<double>(done) / seconds / 1e9 : 0.0;
  double fraction = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0.0;
  if (tty_) {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r%s [%s] %5.1f%% %s/%s %.2f GB/s %s\033[K", label_.c_str(),
                 bar.c_str(), fraction * 100, FormatBytes(done).c_str(),
                 FormatBytes(total).c_str(), gbps, std::string(detail).c_str());
  } else {
    std::fprintf(stderr, "%s: %.1f%% %s/%s %.2f GB/s %s\n", label_.c_str(), fraction * 100,
                 FormatBytes(done).c_str(), FormatBytes(total).c_str(), gbps,
                 std::string(detail).c_str());
  }
  std::fflush(stderr);
}

void Progress::Finish() {
  if (finished_) return;
  finished_ = true;
  if (!quiet_ && tty_ && last_print_us_ != 0) std::fputc('\n', stderr);
}

namespace {

namespace pb = google::protobuf;

nlohmann::json FieldValue(const pb::Message& m, const pb::FieldDescriptor* f, int index) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f);
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f);
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name();
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string v = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      // Bytes (a CUDA IPC handle) as base64, as protobuf's own JSON mapping writes them.
      return f->type() == pb::FieldDescriptor::TYPE_BYTES ? absl::Base64Escape(v) : v;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoToJsonValue(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return nullptr;
}

}  // namespace

nlohmann::json ProtoToJsonValue(const google::protobuf::Message& m) {
  nlohmann::json out = nlohmann::json::object();
  const pb::Descriptor* d = m.GetDescriptor();
  const pb::Reflection* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) {
      nlohmann::json items = nlohmann::json::array();
      for (int k = 0; k < r->FieldSize(m, f); ++k) items.push_back(FieldValue(m, f, k));
      out[f->name()] = std::move(items);
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !r->HasField(m, f)) {
      out[f->name()] = nullptr;  // an absent sub-message (a tensor that is not quantized)
    } else {
      out[f->name()] = FieldValue(m, f, -1);
    }
  }
  return out;
}

std::string ProtoToJson(const google::protobuf::Message& m) { return ProtoToJsonValue(m).dump(2); }

}  // namespace loadstar::cli
