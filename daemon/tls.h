// Transport security for every listener and client (SPEC §7 Security): gRPC SSL
// credentials from PEM files, and the one place a server checks the bearer token.
//
// A server with `ca` requires a client certificate signed by it (mTLS); a client with
// `ca` verifies the server against it (system roots otherwise) and presents cert/key as
// its identity when both are set. The files are read and checked when the credentials
// are built, so a bad or mismatched file is one error naming it, at start-up.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace loadstar::daemon {

struct TlsFiles {
  std::string cert;  // PEM certificate chain (this side's identity)
  std::string key;   // PEM private key of `cert`
  std::string ca;    // PEM CA bundle that peers' certificates must chain to

  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// Files under a `loadstar up --tls-dir` directory (GenerateTlsDir writes them): the CA,
// the daemons' certificate (server and client use) and the users' client certificate.
TlsFiles DaemonTlsFiles(const std::string& dir);
TlsFiles ClientTlsFiles(const std::string& dir);

// A client's TLS files: each of `flags` that is set, else $LOADSTAR_TLS_CA / _CERT / _KEY,
// else the client files of `tls_dir` or $LOADSTAR_TLS_DIR (a `loadstar up --tls-dir`
// directory). All empty: plaintext.
TlsFiles ResolveClientTls(const TlsFiles& flags, const std::string& tls_dir);

// Listener credentials: TLS when `tls.enabled()` (cert and key required), plaintext
// otherwise. A non-empty `token` makes every call on this listener, of every service,
// present "authorization: Bearer <token>" (compared in constant time) before any handler
// runs; calls without it end UNAUTHENTICATED.
// `admit` (may be empty) is asked next, for every call but health checks: an error ends
// the call with that status before any handler (a follower controller answering
// UNAVAILABLE with the leader's address).
using AdmitCheck = std::function<absl::Status()>;
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& tls, const std::string& token, AdmitCheck admit = nullptr);

// Channel credentials: TLS when `tls.enabled()`, plaintext otherwise.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& tls);

// Constant-time equality (the time taken does not depend on where the inputs differ).
bool SecretEquals(const std::string& a, const std::string& b);

}  // namespace loadstar::daemon
