#include "deploy/cli_common.h"

namespace loadstar::cli {

void RegisterControlCommands(CLI::App& app) {}

}  // namespace loadstar::cli
