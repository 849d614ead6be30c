#include "tests/util/small_shm.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace loadstar::testing {
namespace {

bool WriteFile(const char* path, const std::string& text) {
  const int fd = ::open(path, O_WRONLY);
  const bool ok =
      fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (fd >= 0) ::close(fd);
  return ok;
}

// In the child: the namespace and the mount, or false.
bool EnterSmallShm(uint64_t shm_bytes) {
  const uid_t uid = ::getuid();
  const gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return false;
  // Files can only be created by an id mapped in the namespace: map ours to root.
  if (!WriteFile("/proc/self/setgroups", "deny") ||
      !WriteFile("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
      !WriteFile("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1")) {
    return false;
  }
  if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  const std::string options = "size=" + std::to_string(shm_bytes);
  return ::mount("tmpfs", "/dev/shm", "tmpfs", 0, options.c_str()) == 0;
}

}  // namespace

SmallShmResult RunWithSmallShm(uint64_t shm_bytes, const std::function<std::string()>& check) {
  SmallShmResult result;
  int fds[2];
  if (::pipe(fds) != 0) {
    result.failure = std::string("pipe: ") + std::strerror(errno);
    return result;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    result.failure = std::string("fork: ") + std::strerror(errno);
    ::close(fds[0]);
    ::close(fds[1]);
    return result;
  }
  if (pid == 0) {
    ::close(fds[0]);
    // First byte: 'u' (no namespace) or 'r' (ran), then the failure text.
    const std::string report = EnterSmallShm(shm_bytes) ? "r" + check() : std::string("u");
    (void)!::write(fds[1], report.data(), report.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string report;
  char buf[256];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) report.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  if (WIFSIGNALED(wstatus)) {
    result.signal = WTERMSIG(wstatus);
  } else if (report.empty()) {
    result.failure = "the child exited without reporting";
  } else if (report[0] == 'u') {
    result.namespace_unavailable = true;
  } else {
    result.failure = report.substr(1);
  }
  return result;
}

}  // namespace loadstar::testing
