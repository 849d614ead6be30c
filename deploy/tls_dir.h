// `loadstar up --tls-dir DIR`: a throwaway certificate authority and certificates for a
// local cluster, so the secure setup is one flag. DIR then holds
//   ca.pem                     the CA certificate (clients and daemons trust it)
//   daemon.pem, daemon-key.pem  the controller's and workers' identity (server and client
//                              use; names localhost, 127.0.0.1 and this host)
//   client.pem, client-key.pem  the users' identity (CLI, Python and C++ clients; mTLS)
// (file names: DaemonTlsFiles / ClientTlsFiles in daemon/tls.h). Keys are ECDSA P-256,
// written 0600; certificates are valid for 30 days. The CA's key is not kept: nothing can
// be signed with it later, which is what "throwaway" means.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace loadstar::cli {

// Generates the set into `dir` (created) unless it already holds one that is complete and
// valid for at least another day, which is kept so clients configured earlier still work.
absl::Status EnsureTlsDir(const std::string& dir);

}  // namespace loadstar::cli
