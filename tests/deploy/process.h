// Child processes of the `loadstar` binary for end-to-end tests: daemons that announce
// "<what> listening on ADDR" on stdout, and one-shot CLI commands. Tests only.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/util/test_util.h"

namespace loadstar::testing {

// fork + exec of the loadstar binary with `args`; stdout to a pipe, stderr to `log`.
inline pid_t SpawnLoadstar(const std::vector<std::string>& args, int* stdout_fd,
                           const std::string& log, int* stderr_fd = nullptr) {
  int out[2], err[2];
  ::pipe2(out, O_CLOEXEC);
  if (stderr_fd != nullptr) ::pipe2(err, O_CLOEXEC);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    // A test that crashes leaves no daemon behind.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    ::dup2(out[1], 1);
    if (stderr_fd != nullptr) {
      ::dup2(err[1], 2);
    } else {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 2);
    }
    std::string bin = LoadstarBinary();
    std::vector<char*> argv{bin.data()};
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  *stdout_fd = out[0];
  if (stderr_fd != nullptr) {
    ::close(err[1]);
    *stderr_fd = err[0];
  }
  return pid;
}

// Reads everything from `fd` until EOF or `deadline`.
inline std::string Drain(int fd, std::chrono::steady_clock::time_point deadline) {
  std::string data;
  char buf[4096];
  while (true) {
    int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  deadline - std::chrono::steady_clock::now()).count());
    if (ms <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) break;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    data.append(buf, n);
  }
  return data;
}

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `loadstar args...` to completion (at most 30 s).
inline CliResult RunCli(const std::vector<std::string>& args) {
  int out_fd, err_fd;
  pid_t pid = SpawnLoadstar(args, &out_fd, "", &err_fd);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  CliResult r;
  // stderr is small; read stdout to EOF first, then stderr.
  r.out = Drain(out_fd, deadline);
  r.err = Drain(err_fd, deadline);
  ::close(out_fd);
  ::close(err_fd);
  int status = 0;
  if (::waitpid(pid, &status, WNOHANG) == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// A daemon child: started, waited for until it prints "<what> listening on ADDR".
class Daemon {
 public:
  Daemon(const std::vector<std::string>& args, const std::string& log) : log_(log) {
    pid_ = SpawnLoadstar(args, &out_fd_, log);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    std::string line;
    char ch;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      if (::read(out_fd_, &ch, 1) != 1) break;
      if (ch != '\n') {
        line += ch;
        continue;
      }
      size_t at = line.find(" listening on ");
      if (at != std::string::npos) {
        address_ = line.substr(at + 14);
        break;
      }
      line.clear();
    }
  }
  ~Daemon() { Stop(SIGKILL); }

  const std::string& address() const { return address_; }
  bool ok() const { return !address_.empty(); }
  pid_t pid() const { return pid_; }

  // Sends `sig` and reaps the child; returns its wait status (-1 if already stopped).
  int Stop(int sig) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    ::close(out_fd_);
    pid_ = -1;
    return status;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string address_;
};

}  // namespace loadstar::testing
