// Logging is spdlog; this sets the process-wide level and format once, and gives log
// lines structured fields (SPEC §7 Operations: logs as text or JSON lines).
//
//   Log(Level::info, "controller", {{"deployment", name}, {"instance", id}},
//       "placing {} on {}", name, worker);
//
// Text format: "<time> <level> <message> deployment=... instance=...". JSON format: one
// object per line with time, level, component, message and each field as a key. Plain
// spdlog::info(...) calls still work: component "loadstar", no fields.
//
// Thread safety: the loggers are spdlog's synchronous thread-safe ones; a line's fields
// travel to the formatter in a thread-local, which is sound because a synchronous
// logger formats on the calling thread.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

namespace loadstar {

// `level`: trace|debug|info|warn|error|off; `format`: text|json. Logs go to stderr so
// stdout stays data.
absl::Status InitLogging(std::string_view level, std::string_view format = "text");

struct LogField {
  std::string_view key;  // deployment | instance | worker | lease | model | ...
  std::string value;
};

namespace logging_internal {
struct LineContext {
  std::string_view component;
  std::initializer_list<LogField> fields;
};
// The context of the line being logged on this thread (null outside Log()).
const LineContext* CurrentLine();
void SetCurrentLine(const LineContext* line);
}  // namespace logging_internal

using Level = spdlog::level::level_enum;

template <typename... Args>
void Log(Level level, std::string_view component, std::initializer_list<LogField> fields,
         spdlog::format_string_t<Args...> format, Args&&... args) {
  if (!spdlog::should_log(level)) return;
  logging_internal::LineContext line{component, fields};
  logging_internal::SetCurrentLine(&line);
  spdlog::log(level, format, std::forward<Args>(args)...);
  logging_internal::SetCurrentLine(nullptr);
}

}  // namespace loadstar
