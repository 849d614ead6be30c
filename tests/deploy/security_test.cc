// TLS, mTLS and the bearer token end to end (SPEC §7 Security): certificates are made by
// the `openssl` command line tool, not by loadstar, and the daemons are real processes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "daemon/rpc_util.h"
#include "daemon/tls.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/generic/generic_stub.h"
#include "loadstar/v1/controller.grpc.pb.h"
#include "loadstar/v1/worker.grpc.pb.h"
#include "tests/deploy/cluster_test.h"

namespace loadstar::testing {
namespace {

using ::testing::HasSubstr;

// Runs a shell command, true on exit 0.
bool Sh(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()) == 0; }

// A CA (NAME-ca.pem, NAME-ca-key.pem) and certificates it signs, all by `openssl`.
class OpensslCa {
 public:
  OpensslCa(std::string dir, std::string name) : dir_(std::move(dir)), name_(std::move(name)) {
    ok_ = Sh(fmt::format(
        "cd {} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout {n}-ca-key.pem -out {n}-ca.pem -days 2 -subj '/CN={n} test CA'",
        dir_, fmt::arg("n", name_)));
  }
  bool ok() const { return ok_; }
  std::string ca() const { return dir_ + "/" + name_ + "-ca.pem"; }

  // CERT.pem and CERT-key.pem for 127.0.0.1/localhost, server and client use.
  daemon::TlsFiles Issue(const std::string& cert) const {
    std::string ext = dir_ + "/" + cert + ".ext";
    std::ofstream(ext) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          "extendedKeyUsage=serverAuth,clientAuth\n";
    bool ok = Sh(fmt::format(
        "cd {d} && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout {c}-key.pem -out {c}.csr -subj '/CN={c}' && "
        "openssl x509 -req -in {c}.csr -CA {n}-ca.pem -CAkey {n}-ca-key.pem -CAcreateserial "
        "-days 2 -extfile {c}.ext -out {c}.pem",
        fmt::arg("d", dir_), fmt::arg("c", cert), fmt::arg("n", name_)));
    EXPECT_TRUE(ok) << "openssl could not issue " << cert;
    return {dir_ + "/" + cert + ".pem", dir_ + "/" + cert + "-key.pem", ca()};
  }

 private:
  std::string dir_, name_;
  bool ok_ = false;
};

std::vector<std::string> TlsFlags(const daemon::TlsFiles& tls, bool with_ca) {
  std::vector<std::string> flags = {"--tls-cert", tls.cert, "--tls-key", tls.key};
  if (with_ca) {
    flags.push_back("--tls-ca");
    flags.push_back(tls.ca);
  }
  return flags;
}

class SecurityTest : public ClusterTest {
 protected:
  void SetUp() override {
    ClusterTest::SetUp();
    if (!Sh("openssl version")) GTEST_SKIP() << "the openssl command line tool is not installed";
    ASSERT_TRUE(ca_.ok());
    ASSERT_TRUE(other_.ok());
    server_ = ca_.Issue("server");
    client_ = ca_.Issue("client");
    stranger_ = other_.Issue("stranger");
  }

  std::string Addr() { return "127.0.0.1:" + std::to_string(FreePort()); }

  OpensslCa ca_{dir_.path(), "main"};
  OpensslCa other_{dir_.path(), "other"};
  daemon::TlsFiles server_, client_, stranger_;
};

TEST_F(SecurityTest, TheCliNeedsTheRightCa) {
  std::string addr = Addr();
  auto controller = StartController(addr, TlsFlags(server_, /*with_ca=*/false));
  ASSERT_TRUE(controller->ok());
  CliResult ok = Cli(addr, {"status", "--tls-ca", ca_.ca()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;

  auto start = std::chrono::steady_clock::now();
  CliResult plaintext = Cli(addr, {"status"});
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(plaintext.exit_code, 1);
  EXPECT_THAT(plaintext.err, HasSubstr("unreachable"));
  EXPECT_THAT(plaintext.err, HasSubstr("TLS"));
  EXPECT_LT(seconds, 10) << "a plaintext client must fail fast, not wait for its deadline";

  CliResult wrong = Cli(addr, {"status", "--tls-ca", other_.ca()});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_THAT(wrong.err, HasSubstr("TLS handshake failed"));
}

TEST_F(SecurityTest, MutualTlsRejectsAClientWithoutACertificate) {
  std::string addr = Addr();
  auto controller = StartController(addr, TlsFlags(server_, /*with_ca=*/true));
  ASSERT_TRUE(controller->ok());
  CliResult anonymous = Cli(addr, {"status", "--tls-ca", ca_.ca()});
  EXPECT_EQ(anonymous.exit_code, 1);
  EXPECT_THAT(anonymous.err, HasSubstr("unreachable"));
  CliResult foreign = Cli(addr, {"status", "--tls-ca", ca_.ca(), "--tls-cert", stranger_.cert,
                                 "--tls-key", stranger_.key});
  EXPECT_EQ(foreign.exit_code, 1);
  CliResult known = Cli(addr, {"status", "--tls-ca", ca_.ca(), "--tls-cert", client_.cert,
                               "--tls-key", client_.key});
  EXPECT_EQ(known.exit_code, 0) << known.err;
}

TEST_F(SecurityTest, AWorkerWithAWrongCertificateCannotRegister) {
  std::string addr = Addr();
  auto controller = StartController(addr, TlsFlags(server_, /*with_ca=*/true));
  ASSERT_TRUE(controller->ok());
  daemon::TlsFiles impostor = stranger_;
  impostor.ca = ca_.ca();  // trusts the controller, but the controller does not trust it
  auto bad = StartWorker(addr, "impostor", TlsFlags(impostor, true));
  auto good = StartWorker(addr, "w1", TlsFlags(server_, true));
  std::vector<std::string> mtls = {"--tls-ca", ca_.ca(), "--tls-cert", client_.cert,
                                   "--tls-key", client_.key};
  auto workers = [&] {
    std::vector<std::string> args = {"status", "-o", "json"};
    args.insert(args.end(), mtls.begin(), mtls.end());
    return Cli(addr, args).out;
  };
  ASSERT_TRUE(Eventually([&] { return workers().find("\"w1\"") != std::string::npos; }));
  // Several heartbeat periods later the impostor is still unknown.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(workers().find("impostor"), std::string::npos);
  // And the good worker serves a load over TLS, controller to worker.
  std::vector<std::string> deploy = {"deploy", "--model", "org/tiny"};
  deploy.insert(deploy.end(), mtls.begin(), mtls.end());
  ASSERT_EQ(Cli(addr, deploy).exit_code, 0);
  std::vector<std::string> acquire = {"acquire", "org/tiny"};
  acquire.insert(acquire.end(), mtls.begin(), mtls.end());
  CliResult lease = Cli(addr, acquire);
  EXPECT_EQ(lease.exit_code, 0) << lease.err;
}

TEST_F(SecurityTest, BadCertificateFilesAreNamed) {
  std::string addr = Addr();
  CliResult missing = RunCli({"controller", "--addr", addr, "--tls-cert", dir_.Join("nope.pem"),
                              "--tls-key", server_.key});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("tls.cert " + dir_.Join("nope.pem")));
  std::ofstream(dir_.Join("garbage.pem")) << "not a certificate\n";
  CliResult garbage = RunCli({"controller", "--addr", addr, "--tls-cert", dir_.Join("garbage.pem"),
                              "--tls-key", server_.key});
  EXPECT_NE(garbage.exit_code, 0);
  EXPECT_THAT(garbage.err, HasSubstr("is not a PEM certificate"));
  CliResult mismatched = RunCli(
      {"controller", "--addr", addr, "--tls-cert", server_.cert, "--tls-key", client_.key});
  EXPECT_NE(mismatched.exit_code, 0);
  EXPECT_THAT(mismatched.err, HasSubstr("does not belong to the certificate"));
  CliResult client = Cli(addr, {"status", "--tls-ca", dir_.Join("garbage.pem")});
  EXPECT_EQ(client.exit_code, 2);
  EXPECT_THAT(client.err, HasSubstr("tls.ca " + dir_.Join("garbage.pem")));
}

TEST_F(SecurityTest, UpWithATlsDirServesTheCliWithTheGeneratedCertificates) {
  std::string addr = Addr();
  std::string tls_dir = dir_.Join("tls");
  std::ofstream(dir_.Join("token")) << "s3cret\n";
  auto up = std::make_unique<Daemon>(
      std::vector<std::string>{"up", "--addr", addr, "--tls-dir", tls_dir, "--token-file",
                               dir_.Join("token"), "--store", store_dir_, "--device-memory",
                               "256MiB"},
      dir_.Join("daemons.log"));
  ASSERT_TRUE(up->ok());
  // The generated set is a real PKI: openssl verifies both certificates against the CA.
  EXPECT_TRUE(Sh(fmt::format("openssl verify -CAfile {0}/ca.pem {0}/daemon.pem {0}/client.pem",
                             tls_dir)));
  struct stat st {};
  ASSERT_EQ(::stat((tls_dir + "/client-key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u) << "private keys must not be readable by others";

  std::vector<std::string> secure = {"--tls-dir", tls_dir, "--token-file", dir_.Join("token")};
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), secure.begin(), secure.end());
    return Cli(addr, args);
  };
  ASSERT_TRUE(Eventually([&] { return cli({"status"}).out.find("worker-0") != std::string::npos; }));
  ASSERT_EQ(cli({"deploy", "--model", "org/tiny"}).exit_code, 0);
  CliResult lease = cli({"acquire", "org/tiny", "-o", "json"});
  ASSERT_EQ(lease.exit_code, 0) << lease.err;
  // `instance` goes through the C++ attach client (deploy/client), worker included.
  std::string lease_id = nlohmann::json::parse(lease.out)["lease_id"];
  CliResult handle = cli({"instance", "--lease", lease_id, "-o", "json"});
  EXPECT_EQ(handle.exit_code, 0) << handle.err;
  EXPECT_THAT(handle.out, HasSubstr("model.norm.weight"));
  // Without the client certificate the same cluster refuses.
  EXPECT_EQ(Cli(addr, {"status", "--tls-ca", tls_dir + "/ca.pem", "--token-file",
                       dir_.Join("token")}).exit_code, 1);
}

// Calls `method` ("/pkg.Service/Method") with an empty request; unary framing works for
// every method here because the token check answers before any handler runs.
grpc::Status CallEmpty(grpc::GenericStub& stub, const std::string& method, const std::string& token) {
  grpc::ClientContext ctx;
  daemon::TokenAuth(token).Apply(&ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1), response;  // a default ByteBuffer is no message
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status result;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    result = std::move(s);
    done = true;
    cv.notify_one();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  return result;
}

// Every method of a service, from its descriptor: a new RPC is covered without editing this.
std::vector<std::string> Methods(const std::string& service) {
  const google::protobuf::ServiceDescriptor* d =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
  EXPECT_NE(d, nullptr) << service;
  std::vector<std::string> out;
  for (int i = 0; d != nullptr && i < d->method_count(); ++i) {
    out.push_back("/" + service + "/" + d->method(i)->name());
  }
  return out;
}

TEST_F(ClusterTest, EveryRpcOfBothServicesNeedsTheToken) {
  std::ofstream(dir_.Join("token")) << "s3cret\n";
  std::string addr = "127.0.0.1:" + std::to_string(FreePort());
  auto controller = StartController(addr, {"--token-file", dir_.Join("token")});
  auto worker = StartWorker(addr, "w1", {"--token-file", dir_.Join("token")});
  ASSERT_TRUE(controller->ok() && worker->ok());
  struct Target {
    std::string address, service;
  };
  for (const Target& t : {Target{controller->address(), "loadstar.v1.Controller"},
                          Target{worker->address(), "loadstar.v1.Worker"}}) {
    grpc::GenericStub stub(daemon::MakeChannel(t.address));
    std::vector<std::string> methods = Methods(t.service);
    EXPECT_GE(methods.size(), 8u);
    for (const std::string& method : methods) {
      grpc::Status anonymous = CallEmpty(stub, method, "");
      EXPECT_EQ(anonymous.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
      EXPECT_THAT(anonymous.error_message(), HasSubstr("missing bearer token")) << method;
      grpc::Status wrong = CallEmpty(stub, method, "guess");
      EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
      EXPECT_EQ(wrong.error_message().find("guess"), std::string::npos) << "token echoed";
      // With the token the call reaches its handler (whatever it makes of an empty request).
      grpc::Status known = CallEmpty(stub, method, "s3cret");
      EXPECT_NE(known.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
      EXPECT_NE(known.error_code(), grpc::StatusCode::UNIMPLEMENTED) << method;
    }
    // Health checks need no token (Kubernetes probes send none).
    EXPECT_TRUE(CallEmpty(stub, "/grpc.health.v1.Health/Check", "").ok()) << t.service;
  }
}

}  // namespace
}  // namespace loadstar::testing
