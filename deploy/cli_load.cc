#include "deploy/cli_common.h"

namespace loadstar::cli {

void RegisterLoadCommand(CLI::App& app) {}

}  // namespace loadstar::cli
