// gRPC plumbing shared by the services and clients: Status conversion (canonical codes
// carry over one to one, SPEC §3.3) and the optional bearer token.
#pragma once

#include <chrono>
#include <memory>
#include <string>
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

// In an RPC handler: returns the grpc::Status `expr` evaluates to unless it is OK, e.g.
// RETURN_IF_GRPC_ERROR(auth_.Check(ctx)); as the first line of every handler.
#define RETURN_IF_GRPC_ERROR(expr)                                 \
  do {                                                             \
    ::grpc::Status loadstar_grpc_status_ = (expr);                 \
    if (!loadstar_grpc_status_.ok()) return loadstar_grpc_status_; \
  } while (0)

// Checks "authorization: Bearer <token>" on a call; every RPC of both services calls it
// first (RETURN_IF_GRPC_ERROR(auth_.Check(ctx))). An empty `token` disables the check.
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
