#include "tests/util/etcd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <cstring>

namespace loadstar::testing {
namespace {

// GET /health on etcd's client port: true once it answers {"health":"true"}.
bool Healthy(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  bool healthy = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const char request[] = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::write(fd, request, sizeof(request) - 1) > 0) {
      std::string reply;
      char buf[512];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof(buf))) > 0) reply.append(buf, static_cast<size_t>(n));
      healthy = reply.find("\"health\":\"true\"") != std::string::npos;
    }
  }
  ::close(fd);
  return healthy;
}

}  // namespace

EtcdServer::EtcdServer(std::string binary, std::string name) {
  if (::access(binary.c_str(), X_OK) != 0) {
    error_ = binary + " is not installed (Debian package etcd-server; scripts/setup installs it)";
    return;
  }
  int client = FreePort(), peer = FreePort();
  endpoint_ = "127.0.0.1:" + std::to_string(client);
  std::string client_url = "http://" + endpoint_;
  std::string peer_url = "http://127.0.0.1:" + std::to_string(peer);
  std::vector<std::string> args = {binary,
                                   "--name", name,
                                   "--data-dir", dir_.Join("data"),
                                   "--listen-client-urls", client_url,
                                   "--advertise-client-urls", client_url,
                                   "--listen-peer-urls", peer_url,
                                   "--initial-advertise-peer-urls", peer_url,
                                   "--initial-cluster", name + "=" + peer_url,
                                   "--log-level", "error"};
  pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    // etcd dies with the test process, even one that crashes or never runs destructors.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    int log = ::open(dir_.Join("etcd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(log, 1);
    ::dup2(log, 2);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (Healthy(client)) {
      ok_ = true;
      return;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "etcd exited at start; see its log in the test's temp dir";
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  error_ = "etcd did not become healthy within 20 s";
}

EtcdServer::~EtcdServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

EtcdServer* EtcdServer::Shared() {
  static EtcdServer server;  // stopped at exit (and by PR_SET_PDEATHSIG if the test dies)
  return &server;
}

}  // namespace loadstar::testing
