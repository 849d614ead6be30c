// Helpers shared by every test suite.
#pragma once

#include <string>

namespace loadstar::testing {

// A fresh directory under $TEST_TMPDIR or /tmp, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A port that was free a moment ago on 127.0.0.1.
int FreePort();

// Path of the `loadstar` binary under test ($LOADSTAR_BIN, set by ctest).
std::string LoadstarBinary();

// What a shell command did.
struct CommandResult {
  int exit_code = -1;     // -1 when it did not exit normally (or could not start)
  std::string output;     // stdout, then stderr: everything a user would see
  std::string stdout_only;  // stdout alone: what `-o json` prints (logs go to stderr)
};

// Runs `command` with /bin/sh and collects its stdout and stderr separately.
CommandResult RunShell(const std::string& command);

// A Python interpreter that can `import <modules>` ("gguf, numpy"): $LOADSTAR_PYTHON,
// <build>/pyenv/bin/python3, or python3 on PATH; "" when none can (tests then skip).
std::string FindPython(const std::string& modules);

// Runs `LoadstarBinary() + " " + args`.
CommandResult RunLoadstar(const std::string& args);

}  // namespace loadstar::testing
