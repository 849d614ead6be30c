#include "deploy/tls_dir.h"

#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <vector>

#include "base/env.h"
#include "base/status_macros.h"
#include "daemon/openssl_ptr.h"
#include "daemon/tls.h"

namespace loadstar::cli {
namespace {

constexpr int kValidDays = 30;

using Key = daemon::UniqueKey;
using Cert = daemon::UniqueX509;

absl::Status OpenSslFailure(const std::string& what) {
  char buf[256] = "unknown error";
  if (unsigned long e = ERR_get_error()) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return absl::InternalError(fmt::format("--tls-dir: {} failed: {}", what, buf));
}

absl::StatusOr<Key> NewKey() {
  Key key(EVP_EC_gen("P-256"));
  if (key == nullptr) return OpenSslFailure("generating an ECDSA P-256 key");
  return key;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return OpenSslFailure(fmt::format("extension {}", value));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? absl::OkStatus() : OpenSslFailure("adding an extension");
}

struct CertSpec {
  std::string common_name;
  bool ca = false;
  std::string extended_usage;  // "serverAuth,clientAuth"
  std::string alt_names;       // "DNS:localhost,IP:127.0.0.1"
};

// A certificate for `key`, signed by `issuer_key` (self-signed when `issuer` is null).
absl::StatusOr<Cert> MakeCert(const CertSpec& spec, EVP_PKEY* key, X509* issuer,
                              EVP_PKEY* issuer_key) {
  Cert cert(X509_new());
  if (cert == nullptr) return OpenSslFailure("X509_new");
  X509_set_version(cert.get(), 2);  // v3
  // A random 127-bit serial: certificates of two generated sets never collide.
  std::unique_ptr<BIGNUM, decltype(&BN_free)> serial(BN_new(), BN_free);
  if (!BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) {
    return OpenSslFailure("a serial number");
  }
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);  // tolerate clock skew
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValidDays * 86400L);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("loadstar local cluster"), -1,
                             -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1,
                             -1, 0);
  X509* signer = issuer == nullptr ? cert.get() : issuer;
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  RETURN_IF_ERROR(AddExtension(cert.get(), signer, NID_subject_key_identifier, "hash"));
  if (issuer != nullptr) {
    RETURN_IF_ERROR(
        AddExtension(cert.get(), signer, NID_authority_key_identifier, "keyid:always"));
  }
  if (spec.ca) {
    RETURN_IF_ERROR(AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE"));
    RETURN_IF_ERROR(
        AddExtension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign"));
  } else {
    RETURN_IF_ERROR(AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE"));
    RETURN_IF_ERROR(
        AddExtension(cert.get(), signer, NID_key_usage, "critical,digitalSignature"));
    RETURN_IF_ERROR(AddExtension(cert.get(), signer, NID_ext_key_usage, spec.extended_usage));
  }
  if (!spec.alt_names.empty()) {
    RETURN_IF_ERROR(AddExtension(cert.get(), signer, NID_subject_alt_name, spec.alt_names));
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return OpenSslFailure("signing");
  return cert;
}

std::string Pem(int (*write)(BIO*, void*), void* object) {
  daemon::UniqueBio bio(BIO_new(BIO_s_mem()));
  write(bio.get(), object);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string CertPem(X509* cert) {
  return Pem([](BIO* b, void* x) { return PEM_write_bio_X509(b, static_cast<X509*>(x)); }, cert);
}

std::string KeyPem(EVP_PKEY* key) {
  return Pem(
      [](BIO* b, void* k) {
        return PEM_write_bio_PrivateKey(b, static_cast<EVP_PKEY*>(k), nullptr, nullptr, 0,
                                        nullptr, nullptr);
      },
      key);
}

absl::Status WriteFile(const std::string& path, const std::string& data, mode_t mode) {
  RETURN_IF_ERROR(WriteFileAtomically(Env::Default(), path, data));
  if (::chmod(path.c_str(), mode) != 0) {
    return absl::InternalError(fmt::format("--tls-dir: chmod {}: {}", path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

// True when every file exists, each certificate outlives tomorrow and the credentials
// build (so each key matches its certificate).
bool Usable(const std::string& dir) {
  for (const daemon::TlsFiles& files : {daemon::DaemonTlsFiles(dir), daemon::ClientTlsFiles(dir)}) {
    for (const std::string& path : {files.cert, files.ca}) {
      absl::StatusOr<std::string> pem = ReadFileToString(Env::Default(), path, 1 << 20);
      if (!pem.ok()) return false;
      daemon::UniqueBio bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())));
      Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
      time_t tomorrow = std::time(nullptr) + 86400;
      if (cert == nullptr || X509_cmp_time(X509_get0_notAfter(cert.get()), &tomorrow) <= 0) {
        ERR_clear_error();
        return false;
      }
    }
    if (!daemon::MakeServerCredentials(files, "").ok()) return false;
  }
  return true;
}

}  // namespace

absl::Status EnsureTlsDir(const std::string& dir) {
  RETURN_IF_ERROR(Env::Default()->CreateDirs(dir));
  // Private to this user: the keys are never readable by others, not even while written.
  if (::chmod(dir.c_str(), 0700) != 0) {
    return absl::InternalError(fmt::format("--tls-dir: chmod {}: {}", dir, std::strerror(errno)));
  }
  if (Usable(dir)) return absl::OkStatus();
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  std::string alt_names = "DNS:localhost,IP:127.0.0.1,IP:::1";
  if (host[0] != '\0' && std::string(host) != "localhost") alt_names += fmt::format(",DNS:{}", host);

  ASSIGN_OR_RETURN(Key ca_key, NewKey());
  ASSIGN_OR_RETURN(Cert ca, MakeCert({.common_name = "loadstar local CA", .ca = true},
                                     ca_key.get(), nullptr, ca_key.get()));
  ASSIGN_OR_RETURN(Key daemon_key, NewKey());
  ASSIGN_OR_RETURN(Cert daemon_cert,
                   MakeCert({.common_name = "loadstar daemon",
                             .extended_usage = "serverAuth,clientAuth",
                             .alt_names = alt_names},
                            daemon_key.get(), ca.get(), ca_key.get()));
  ASSIGN_OR_RETURN(Key client_key, NewKey());
  ASSIGN_OR_RETURN(Cert client_cert,
                   MakeCert({.common_name = "loadstar client", .extended_usage = "clientAuth"},
                            client_key.get(), ca.get(), ca_key.get()));
  daemon::TlsFiles d = daemon::DaemonTlsFiles(dir), c = daemon::ClientTlsFiles(dir);
  // Keys first, the CA last: a set interrupted half-way is never taken as complete.
  RETURN_IF_ERROR(WriteFile(d.key, KeyPem(daemon_key.get()), 0600));
  RETURN_IF_ERROR(WriteFile(c.key, KeyPem(client_key.get()), 0600));
  RETURN_IF_ERROR(WriteFile(d.cert, CertPem(daemon_cert.get()), 0644));
  RETURN_IF_ERROR(WriteFile(c.cert, CertPem(client_cert.get()), 0644));
  RETURN_IF_ERROR(WriteFile(d.ca, CertPem(ca.get()), 0644));
  return absl::OkStatus();
}

}  // namespace loadstar::cli
