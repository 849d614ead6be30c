#include "tests/util/test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace loadstar::testing {

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TempDir::TempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/loadstar-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string LoadstarBinary() {
  const char* bin = std::getenv("LOADSTAR_BIN");
  return bin != nullptr ? bin : "loadstar";
}

CommandResult RunShell(const std::string& command) {
  CommandResult result;
  // stderr goes to a file of this run's own temp dir: parallel tests never share it.
  TempDir dir;
  const std::string err_path = dir.Join("stderr");
  FILE* pipe = ::popen(("(" + command + ") 2>'" + err_path + "'").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    result.stdout_only.append(buffer, n);
  }
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_path, std::ios::binary);
  std::ostringstream err_text;
  err_text << err.rdbuf();
  result.output = result.stdout_only + err_text.str();
  return result;
}

CommandResult RunLoadstar(const std::string& args) {
  return RunShell(LoadstarBinary() + " " + args);
}

std::string FindPython(const std::string& modules) {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("LOADSTAR_PYTHON")) candidates.push_back(env);
  candidates.push_back(std::string(LOADSTAR_BINARY_DIR) + "/pyenv/bin/python3");
  candidates.push_back("python3");
  for (const std::string& python : candidates) {
    std::string probe = "'" + python + "' -c 'import " + modules + "' >/dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) return python;
  }
  return "";
}

}  // namespace loadstar::testing
