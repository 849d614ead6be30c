// gRPC plumbing shared by the services and clients: Status conversion (canonical codes
// carry over one to one, SPEC §3.3) and the optional bearer token.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace loadstar::daemon {

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

// Checks "authorization: Bearer <token>" on a call; every RPC of both services calls it
// first. An empty `token` disables the check.
class TokenAuth {
 public:
  explicit TokenAuth(std::string token) : token_(std::move(token)) {}
  grpc::Status Check(const grpc::ServerContext* context) const;
  // Adds the token (if any) to an outgoing call.
  void Apply(grpc::ClientContext* context) const;
  const std::string& token() const { return token_; }

 private:
  std::string token_;
};

// Reads a token file (one line; surrounding whitespace trimmed). Empty path: no token.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// An insecure channel to `address` with loadstar's message size limits.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

// Server-side limits (SPEC §7: request size limits).
inline constexpr int kMaxMessageBytes = 64 << 20;

}  // namespace loadstar::daemon
