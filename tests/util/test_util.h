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

// Path of the `loadstar` binary under test ($LOADSTAR_BIN, set by ctest).
std::string LoadstarBinary();

}  // namespace loadstar::testing
