#include "base/logging.h"

#include <chrono>
#include <ctime>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_color_sinks.h"

namespace loadstar {
namespace logging_internal {
namespace {
thread_local const LineContext* current_line = nullptr;
}  // namespace

const LineContext* CurrentLine() { return current_line; }
void SetCurrentLine(const LineContext* line) { current_line = line; }

}  // namespace logging_internal

namespace {

// "2026-12-03T06:34:04.123Z": UTC with milliseconds, what log pipelines parse.
std::string Timestamp(spdlog::log_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  return absl::StrCat(buf, ".", absl::Dec(ms % 1000, absl::kZeroPad3), "Z");
}

// One JSON object per line.
class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::json line;
    line["time"] = Timestamp(msg.time);
    line["level"] = std::string(spdlog::level::to_string_view(msg.level).data(),
                                spdlog::level::to_string_view(msg.level).size());
    const logging_internal::LineContext* ctx = logging_internal::CurrentLine();
    line["component"] = ctx != nullptr ? std::string(ctx->component) : "loadstar";
    line["message"] = std::string(msg.payload.data(), msg.payload.size());
    if (ctx != nullptr) {
      for (const LogField& f : ctx->fields) line[std::string(f.key)] = f.value;
    }
    // Invalid UTF-8 in a message (a path, say) is replaced rather than throwing.
    std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

// The text pattern, with the line's fields as key=value after the message.
class FieldsFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&, spdlog::memory_buf_t& dest) override {
    const logging_internal::LineContext* ctx = logging_internal::CurrentLine();
    if (ctx == nullptr) return;
    for (const LogField& f : ctx->fields) {
      std::string kv = absl::StrCat(" ", std::string(f.key), "=", f.value);
      dest.append(kv.data(), kv.data() + kv.size());
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<FieldsFlag>();
  }
};

}  // namespace

absl::Status InitLogging(std::string_view level, std::string_view format) {
  spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown log level '", std::string(level), "' (trace|debug|info|warn|error|off)"));
  }
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown log format '", std::string(format), "' (text|json)"));
  }
  std::shared_ptr<spdlog::logger> logger = spdlog::get("loadstar");
  if (logger == nullptr) logger = spdlog::stderr_color_mt("loadstar");
  if (format == "json") {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    auto text = std::make_unique<spdlog::pattern_formatter>();
    text->add_flag<FieldsFlag>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v%*");
    logger->set_formatter(std::move(text));
  }
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

}  // namespace loadstar
