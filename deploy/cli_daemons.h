// The daemon commands of the `loadstar` binary: controller, worker, up.
#pragma once

#include "CLI/CLI.hpp"

namespace loadstar::cli {

void RegisterDaemonCommands(CLI::App& app);  // controller | worker | up

}  // namespace loadstar::cli
