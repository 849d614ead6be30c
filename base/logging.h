// Logging is spdlog; this sets the process-wide level and format once.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace loadstar {

// `level`: trace|debug|info|warn|error|off. Logs go to stderr so stdout stays data.
absl::Status InitLogging(std::string_view level);

}  // namespace loadstar
