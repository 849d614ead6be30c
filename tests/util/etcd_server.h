// A real etcd (Debian's etcd-server, /usr/bin/etcd) for tests: one member on loopback
// with free ports and a temporary data dir, killed with the object. Tests that need it
// skip, naming the reason, when the binary is missing or it does not start. Tests only.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/util/test_util.h"

namespace loadstar::testing {

class EtcdServer {
 public:
  // Starts a member; ok() tells whether it answers. `name` names the member.
  explicit EtcdServer(std::string binary = "/usr/bin/etcd", std::string name = "test");
  ~EtcdServer();
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  // "127.0.0.1:PORT", the client endpoint.
  const std::string& endpoint() const { return endpoint_; }
  pid_t pid() const { return pid_; }

  // The process-wide member most tests share (started on first use, stopped at exit).
  static EtcdServer* Shared();

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  std::string endpoint_;
  std::string error_;
  bool ok_ = false;
};

}  // namespace loadstar::testing
