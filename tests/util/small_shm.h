// Runs a check in a child process that sees a tiny /dev/shm: a tmpfs of `shm_bytes`
// mounted over /dev/shm in the child's own user and mount namespace (unprivileged where
// the kernel allows user namespaces), so "/dev/shm is full" can be tested without filling
// the machine's. The child dies, rather than returns, if the check crashes (a SIGBUS from
// touching shm past the tmpfs's end shows up as that).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace loadstar::testing {

struct SmallShmResult {
  bool namespace_unavailable = false;  // the mount could not be made: skip the test
  int signal = 0;                      // the child died of this signal (0: it did not)
  std::string failure;                 // what `check` returned ("" = passed)
};

// `check` runs in the child; it returns "" when every expectation held, else what failed.
SmallShmResult RunWithSmallShm(uint64_t shm_bytes, const std::function<std::string()>& check);

}  // namespace loadstar::testing
