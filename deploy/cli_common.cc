#include "deploy/cli_common.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"

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

void AddOutputFlag(CLI::App* cmd, std::string* format) {
  cmd->add_option("-o,--output", *format, "output format")
      ->check(CLI::IsMember({"text", "json"}))
      ->default_val("text");
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

std::string ProtoToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

}  // namespace loadstar::cli
