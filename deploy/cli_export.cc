#include "deploy/cli_common.h"

namespace loadstar::cli {

void RegisterStoreExportCommand(CLI::App& store_cmd) {}

}  // namespace loadstar::cli
