#include "deploy/cli_common.h"

namespace loadstar::cli {

void RegisterStoreCommands(CLI::App& app) {}

}  // namespace loadstar::cli
