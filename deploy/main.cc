// The one `loadstar` binary: CLI commands and the daemons, as subcommands.
#include <cstdio>
#include <string>

#include "absl/synchronization/mutex.h"
#include "base/logging.h"
#include "deploy/cli_common.h"

int main(int argc, char** argv) {
  // Debian's Abseil is built with Mutex deadlock detection on (no NDEBUG): a lock-order
  // graph update on every Lock, ~5% of a loaded controller's CPU. TSan checks lock order
  // in the sanitizer build instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  CLI::App app{"loadstar: serverless multi-GPU model loading"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "loadstar 0.1.0");
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")
      ->default_val("warn");
  std::string log_format = "text";
  app.add_option("--log-format", log_format, "text | json (one object per line: time, level, "
                 "component, message and fields such as deployment, instance, worker, lease)")
      ->default_val("text");
  app.parse_complete_callback([&] {
    absl::Status status = loadstar::InitLogging(log_level, log_format);
    if (!status.ok()) {
      bool format = std::string(status.message()).find("log format") != std::string::npos;
      throw CLI::ValidationError(format ? "--log-format" : "--log-level",
                                 std::string(status.message()));
    }
  });

  loadstar::cli::RegisterStoreCommands(app);
  loadstar::cli::RegisterLoadCommand(app);
  loadstar::cli::RegisterControlCommands(app);
  loadstar::cli::RegisterInstanceCommand(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One exit code scheme (0 ok, 1 runtime error, 2 usage error) and one line, as for
    // every other error.
    std::fprintf(stderr, "loadstar: %s (see --help)\n", e.what());
    return 2;
  }
  return loadstar::cli::ExitCode();
}
