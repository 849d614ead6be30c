// gRPC plumbing shared by the services and clients: Status conversion (canonical codes
// carry over one to one, SPEC §3.3) and the optional bearer token.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace loadstar::daemon {

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

// An RPC handler's reply from a manager's result: moves the value into `*response`, or
// converts the error.
template <typename T, typename Response>
grpc::Status Respond(absl::StatusOr<T> result, Response* response) {
  if (!result.ok()) return ToGrpc(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

// The client side of the bearer token: adds "authorization: Bearer <token>" to outgoing
// calls. Servers check it in one place, before any handler (MakeServerCredentials in
// daemon/tls.h). An empty `token` sends none.
class TokenAuth {
 public:
  explicit TokenAuth(std::string token) : token_(std::move(token)) {}
  // Adds the token (if any) to an outgoing call.
  void Apply(grpc::ClientContext* context) const;
  const std::string& token() const { return token_; }

 private:
  std::string token_;
};

// What a client needs to reach a loadstar daemon: channel credentials and the token.
struct ClientSecurity {
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // null: plaintext
  TokenAuth auth{""};
};

// Reads a token file (one line; surrounding whitespace trimmed). Empty path: no token.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// A channel to `address` with loadstar's message size limits and reconnect backoff;
// `credentials` from MakeChannelCredentials (daemon/tls.h), null for plaintext.
std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

// A follower controller's UNAVAILABLE message ends with kLeaderIsAt + the leader's
// address; clients (CLI, worker agent, C++ and Python clients) follow it.
inline constexpr std::string_view kLeaderIsAt = "the leader is at ";
// The leader's address named by `status`, or "".
std::string LeaderNamedBy(const grpc::Status& status);

// Server-side limits (SPEC §7: request size limits).
inline constexpr int kMaxMessageBytes = 64 << 20;

}  // namespace loadstar::daemon
