// The controllers a client may dial, `--controller` / `--addr` / $LOADSTAR_ADDR as a
// comma-separated list (SPEC §7 High availability). Under etcd one of them leads and the
// others answer UNAVAILABLE naming it ("... the leader is at ADDR"); a client follows
// that, or moves on to the next address when one does not answer.
//
// Thread safety: thread-compatible (one per client thread).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/rpc_util.h"
#include "loadstar/v1/controller.grpc.pb.h"

namespace loadstar::daemon {

// "h1:7070, h2:7070" -> {"h1:7070", "h2:7070"}; INVALID_ARGUMENT when empty.
absl::StatusOr<std::vector<std::string>> SplitAddresses(const std::string& addresses);

class ControllerEndpoints {
 public:
  ControllerEndpoints(std::vector<std::string> addresses, ClientSecurity security);

  loadstar::v1::Controller::Stub* stub();
  // The channel to current(), the one stub() uses.
  std::shared_ptr<grpc::Channel> channel();
  const std::string& current() const { return addresses_[current_]; }
  // After a failed call: dial the leader `status` names (added to the list when new), else
  // the next address. False when the failure is not one another controller could fix.
  bool Follow(const grpc::Status& status);

  // The address of the controller that answers (the leader, under etcd): asks each in
  // turn, following redirects, with a short read-only call. When none answers:
  // UNAVAILABLE with the last call's message (the caller names the addresses it gave).
  absl::StatusOr<std::string> FindLeader();

 private:
  std::vector<std::string> addresses_;
  size_t current_ = 0;
  ClientSecurity security_;
  struct Endpoint {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<loadstar::v1::Controller::Stub> stub;
  };
  std::map<std::string, Endpoint> endpoints_;  // by address, dialled on first use
};

// A client's connection to the controller that answers among `addresses`: its address and
// the channel FindLeader already connected, for the caller's own stub (a second channel
// would connect again: ~half of a short CLI command's time). FindLeader's error when none
// answers. A single address is not probed: its channel is returned for the first call,
// whose error (with the caller's deadline, not the probe's 5 s) names it.
struct ControllerConnection {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
};
absl::StatusOr<ControllerConnection> ConnectToController(std::vector<std::string> addresses,
                                                         ClientSecurity security);

}  // namespace loadstar::daemon
