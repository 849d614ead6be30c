#include "daemon/tls.h"

#include <fmt/format.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdlib>
#include <string_view>

#include "base/env.h"
#include "base/status_macros.h"

namespace loadstar::daemon {
namespace {

constexpr uint64_t kMaxPemBytes = 1 << 20;
constexpr std::string_view kHealthPrefix = "/grpc.health.v1.Health/";

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no PEM block found";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using UniqueBio = std::unique_ptr<BIO, BioDeleter>;
using UniqueX509 = std::unique_ptr<X509, X509Deleter>;
using UniqueKey = std::unique_ptr<EVP_PKEY, KeyDeleter>;

UniqueBio MemoryBio(const std::string& pem) {
  return UniqueBio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// `what` names the setting ("tls.cert"), so the error says which file of which role is bad.
absl::StatusOr<std::string> ReadPem(const std::string& path, const std::string& what) {
  absl::StatusOr<std::string> text = ReadFileToString(Env::Default(), path, kMaxPemBytes);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{} {}: {}", what, path, std::string(text.status().message())));
  }
  return *text;
}

absl::StatusOr<UniqueX509> FirstCertificate(const std::string& pem, const std::string& path,
                                            const std::string& what) {
  UniqueBio bio = MemoryBio(pem);
  UniqueX509 cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("{} {} is not a PEM certificate: {}", what, path, OpenSslError()));
  }
  return cert;
}

// The PEM strings of a TLS side, checked: certificates parse, the key parses and belongs
// to the certificate.
struct Pems {
  std::string cert, key, ca;
};

absl::StatusOr<Pems> LoadPems(const TlsFiles& tls, bool server) {
  Pems p;
  if (tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError(
        tls.cert.empty() ? fmt::format("tls.key {} is set without tls.cert", tls.key)
                         : fmt::format("tls.cert {} is set without tls.key", tls.cert));
  }
  if (server && tls.cert.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("tls.ca {} is set without tls.cert and tls.key: a TLS server needs its own "
                    "certificate", tls.ca));
  }
  if (!tls.ca.empty()) {
    ASSIGN_OR_RETURN(p.ca, ReadPem(tls.ca, "tls.ca"));
    RETURN_IF_ERROR(FirstCertificate(p.ca, tls.ca, "tls.ca").status());
  }
  if (tls.cert.empty()) return p;
  ASSIGN_OR_RETURN(p.cert, ReadPem(tls.cert, "tls.cert"));
  ASSIGN_OR_RETURN(p.key, ReadPem(tls.key, "tls.key"));
  ASSIGN_OR_RETURN(UniqueX509 cert, FirstCertificate(p.cert, tls.cert, "tls.cert"));
  UniqueBio key_bio = MemoryBio(p.key);
  UniqueKey key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("tls.key {} is not a PEM private key: {}", tls.key, OpenSslError()));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(fmt::format(
        "tls.key {} does not belong to the certificate tls.cert {}", tls.key, tls.cert));
  }
  return p;
}

// The auth metadata processor of gRPC core: runs in the server's auth filter, before the
// call reaches any service, for every method of every service on the listener.
struct TokenCheck {
  std::string expected;  // "Bearer <token>"; empty: no token required
  AdmitCheck admit;

  static void Process(void* state, grpc_auth_context*, const grpc_metadata* md, size_t num_md,
                      grpc_process_auth_metadata_done_cb done, void* user_data) {
    const auto* self = static_cast<const TokenCheck*>(state);
    bool present = false, valid = false, health = false;
    for (size_t i = 0; i < num_md; ++i) {
      std::string_view key(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(md[i].key)),
                           GRPC_SLICE_LENGTH(md[i].key));
      std::string_view value(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(md[i].value)),
                             GRPC_SLICE_LENGTH(md[i].value));
      // Health checks carry no token (Kubernetes' gRPC probes cannot send one) and reveal
      // only SERVING or not.
      if (key == ":path" && value.rfind(kHealthPrefix, 0) == 0) health = true;
      if (key != "authorization") continue;
      present = true;
      valid = SecretEquals(std::string(value), self->expected);
    }
    // The messages never echo the token, right or wrong.
    if (health) {
      done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    } else if (!self->expected.empty() && !present) {
      done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED,
           "missing bearer token (pass --token-file or $LOADSTAR_TOKEN_FILE)");
    } else if (!self->expected.empty() && !valid) {
      done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED, "wrong bearer token");
    } else if (absl::Status admitted = self->admit ? self->admit() : absl::OkStatus();
               !admitted.ok()) {
      std::string message(admitted.message());  // core copies it before done() returns
      done(user_data, nullptr, 0, nullptr, 0, static_cast<grpc_status_code>(admitted.code()),
           message.c_str());
    } else {
      done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    }
  }
  static void Destroy(void* state) { delete static_cast<TokenCheck*>(state); }
};

// gRPC C++ offers an AuthMetadataProcessor only on TLS credentials; core takes one on any
// credentials, plaintext included. This binds a port through core so the token is checked
// in the same place whatever the transport.
class CheckedServerCredentials final : public grpc::ServerCredentials {
 public:
  CheckedServerCredentials(Pems pems, bool tls, std::string token, AdmitCheck admit)
      : pems_(std::move(pems)), tls_(tls), token_(std::move(token)), admit_(std::move(admit)) {}

  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    // Only loadstar builds these credentials, and it never installs another processor.
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    grpc_server_credentials* creds = nullptr;
    if (tls_) {
      grpc_ssl_pem_key_cert_pair pair{pems_.key.c_str(), pems_.cert.c_str()};
      creds = grpc_ssl_server_credentials_create_ex(
          pems_.ca.empty() ? nullptr : pems_.ca.c_str(), &pair, 1,
          pems_.ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                           : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
          nullptr);
    } else {
      creds = grpc_insecure_server_credentials_create();
    }
    if (!token_.empty() || admit_) {
      grpc_auth_metadata_processor processor{
          &TokenCheck::Process, &TokenCheck::Destroy,
          new TokenCheck{token_.empty() ? "" : "Bearer " + token_, admit_}};
      grpc_server_credentials_set_auth_metadata_processor(creds, processor);
    }
    int port = grpc_server_add_http2_port(server, addr.c_str(), creds);
    grpc_server_credentials_release(creds);
    return port;
  }

  Pems pems_;
  bool tls_;
  std::string token_;
  AdmitCheck admit_;
};

}  // namespace

TlsFiles DaemonTlsFiles(const std::string& dir) {
  return {dir + "/daemon.pem", dir + "/daemon-key.pem", dir + "/ca.pem"};
}

TlsFiles ClientTlsFiles(const std::string& dir) {
  return {dir + "/client.pem", dir + "/client-key.pem", dir + "/ca.pem"};
}

TlsFiles ResolveClientTls(const TlsFiles& flags, const std::string& tls_dir) {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v == nullptr ? "" : v);
  };
  std::string dir = tls_dir.empty() ? env("LOADSTAR_TLS_DIR") : tls_dir;
  TlsFiles from_dir = dir.empty() ? TlsFiles{} : ClientTlsFiles(dir);
  auto pick = [&](const std::string& flag, const char* var, const std::string& in_dir) {
    if (!flag.empty()) return flag;
    std::string v = env(var);
    return v.empty() ? in_dir : v;
  };
  return {pick(flags.cert, "LOADSTAR_TLS_CERT", from_dir.cert),
          pick(flags.key, "LOADSTAR_TLS_KEY", from_dir.key),
          pick(flags.ca, "LOADSTAR_TLS_CA", from_dir.ca)};
}

bool SecretEquals(const std::string& a, const std::string& b) {
  // CRYPTO_memcmp is constant-time in the length compared; comparing lengths first leaks
  // only the length, which a bearer token's format makes public anyway.
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& tls, const std::string& token, AdmitCheck admit) {
  Pems pems;
  if (tls.enabled()) {
    ASSIGN_OR_RETURN(pems, LoadPems(tls, /*server=*/true));
  }
  return std::shared_ptr<grpc::ServerCredentials>(
      new CheckedServerCredentials(std::move(pems), tls.enabled(), token, std::move(admit)));
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  ASSIGN_OR_RETURN(Pems pems, LoadPems(tls, /*server=*/false));
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = pems.ca;
  options.pem_private_key = pems.key;
  options.pem_cert_chain = pems.cert;
  return grpc::SslCredentials(options);
}

}  // namespace loadstar::daemon
