// Owning pointers for the OpenSSL objects loadstar handles (certificates, keys, BIOs), so
// every early return frees them. Shared by daemon/tls.cc and deploy/tls_dir.cc.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>

namespace loadstar::daemon {

struct OpenSslFree {
  void operator()(BIO* b) const { BIO_free(b); }
  void operator()(X509* x) const { X509_free(x); }
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using UniqueBio = std::unique_ptr<BIO, OpenSslFree>;
using UniqueX509 = std::unique_ptr<X509, OpenSslFree>;
using UniqueKey = std::unique_ptr<EVP_PKEY, OpenSslFree>;

}  // namespace loadstar::daemon
