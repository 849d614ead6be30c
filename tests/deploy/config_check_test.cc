// `loadstar controller --check` / `loadstar worker --check` (deploy/config_check.h): the
// real binary validates a config and the files it names, prints "config OK" or one error
// line, and starts nothing. Certificates are made by the `openssl` command line tool.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/deploy/process.h"
#include "tests/util/test_util.h"

namespace loadstar::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

bool Sh(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

class ConfigCheckTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_.Join(name);
    std::ofstream(path) << text;
    return path;
  }

  // A self-signed certificate and its key (enough for a server's own identity), or
  // false when openssl is not installed.
  bool MakeCert(const std::string& name) {
    return Sh(fmt::format(
        "cd {} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout {n}-key.pem -out {n}.pem -days 2 -subj '/CN={n}'",
        dir_.path(), fmt::arg("n", name)));
  }

  TempDir dir_;
};

TEST_F(ConfigCheckTest, AGoodControllerConfigIsOkAndNothingStarts) {
  std::string token = Write("token", "s3cret\n");
  std::string db_dir = dir_.Join("not-created");
  int port = FreePort();
  std::string config = Write("controller.yaml", fmt::format(
      "address: 127.0.0.1:{}\nstate: sqlite:{}/controller.db\ntoken_file: {}\n"
      "metrics_address: 127.0.0.1:0\n", port, db_dir, token));
  CliResult r = RunCli({"controller", "--config", config, "--check"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "config OK\n");
  EXPECT_THAT(r.out, Not(HasSubstr("listening")));
  // Starting would have created the database's directory (StartController does).
  EXPECT_FALSE(std::filesystem::exists(db_dir)) << "--check must not open the state store";
}

TEST_F(ConfigCheckTest, AGoodWorkerConfigIsOk) {
  std::string config = Write("worker.yaml",
      "address: 0.0.0.0:7071\ncontroller: controller.example:7070\n"
      "store: /nonexistent/store\nchunk_size: 4MiB\n");
  CliResult r = RunCli({"worker", "--config", config, "--check"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "config OK\n");
}

TEST_F(ConfigCheckTest, AnUnknownKeyIsNamedWithExitCode2) {
  std::string controller = Write("controller.yaml", "address: 127.0.0.1:7070\nlistn: x\n");
  CliResult c = RunCli({"controller", "--config", controller, "--check"});
  EXPECT_EQ(c.exit_code, 2);
  EXPECT_THAT(c.err, HasSubstr("listn"));
  EXPECT_THAT(c.err, HasSubstr(controller));
  EXPECT_EQ(c.out, "");

  std::string worker = Write("worker.yaml", "tls: {cert: a.pem, key: b.pem, cafile: c.pem}\n");
  CliResult w = RunCli({"worker", "--config", worker, "--check"});
  EXPECT_EQ(w.exit_code, 2);
  EXPECT_THAT(w.err, HasSubstr("cafile"));
}

TEST_F(ConfigCheckTest, AMissingTlsFileIsNamed) {
  if (!Sh("openssl version")) GTEST_SKIP() << "the openssl command line tool is not installed";
  ASSERT_TRUE(MakeCert("daemon"));
  std::string cert = dir_.Join("daemon.pem"), key = dir_.Join("daemon-key.pem");
  std::string missing = dir_.Join("missing-ca.pem");
  std::string good = Write("good.yaml",
      fmt::format("address: 127.0.0.1:7070\ntls: {{cert: {}, key: {}}}\n", cert, key));
  CliResult ok = RunCli({"controller", "--config", good, "--check"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "config OK\n");

  std::string bad = Write("bad.yaml", fmt::format(
      "address: 127.0.0.1:7070\ntls: {{cert: {}, key: {}, ca: {}}}\n", cert, key, missing));
  CliResult r = RunCli({"controller", "--config", bad, "--check"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("tls.ca " + missing));
  EXPECT_EQ(r.out, "");

  // The worker checks the same files, and flags override the config as when it runs.
  std::string worker = Write("worker.yaml", "address: 127.0.0.1:0\n");
  CliResult w = RunCli({"worker", "--config", worker, "--check", "--tls-cert",
                        dir_.Join("nope.pem"), "--tls-key", key});
  EXPECT_NE(w.exit_code, 0);
  EXPECT_THAT(w.err, HasSubstr("tls.cert " + dir_.Join("nope.pem")));
}

TEST_F(ConfigCheckTest, AMismatchedKeyIsRefused) {
  if (!Sh("openssl version")) GTEST_SKIP() << "the openssl command line tool is not installed";
  ASSERT_TRUE(MakeCert("one"));
  ASSERT_TRUE(MakeCert("two"));
  std::string config = Write("controller.yaml", fmt::format(
      "tls: {{cert: {}, key: {}}}\n", dir_.Join("one.pem"), dir_.Join("two-key.pem")));
  CliResult r = RunCli({"controller", "--config", config, "--check"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("does not belong to the certificate"));
}

TEST_F(ConfigCheckTest, AMissingOrEmptyTokenFileIsNamed) {
  std::string missing = dir_.Join("no-token");
  std::string config = Write("worker.yaml", fmt::format("token_file: {}\n", missing));
  CliResult r = RunCli({"worker", "--config", config, "--check"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("token_file"));
  EXPECT_THAT(r.err, HasSubstr(missing));

  std::string empty = Write("empty-token", "\n");
  std::string config2 = Write("controller.yaml", fmt::format("token_file: {}\n", empty));
  CliResult e = RunCli({"controller", "--config", config2, "--check"});
  EXPECT_EQ(e.exit_code, 2);
  EXPECT_THAT(e.err, HasSubstr("is empty"));
}

TEST_F(ConfigCheckTest, AnAddressWithoutAPortIsRefused) {
  std::string config = Write("worker.yaml", "controller: controller.example\n");
  CliResult r = RunCli({"worker", "--config", config, "--check"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("controller: 'controller.example' is not HOST:PORT"));

  // Each of an HA set's controllers is checked.
  std::string ha = Write("ha.yaml", "controller: h1:7070,h2:7070,h3:7070\n");
  CliResult ok = RunCli({"worker", "--config", ha, "--check"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  std::string bad = Write("bad.yaml", "controller: h1:7070,h2,h3:7070\n");
  CliResult b = RunCli({"worker", "--config", bad, "--check"});
  EXPECT_EQ(b.exit_code, 2);
  EXPECT_THAT(b.err, HasSubstr("controller: 'h2' is not HOST:PORT"));
}

// The examples the README points at are valid configs (their /etc/loadstar files created
// under a temp root, as an operator would install them).
TEST_F(ConfigCheckTest, TheExampleConfigsPass) {
  std::string root = dir_.Join("root");
  std::filesystem::create_directories(root + "/etc/loadstar");
  std::ofstream(root + "/etc/loadstar/token") << "example-token\n";
  for (const std::string daemon : {"controller", "worker"}) {
    std::ifstream in(std::string(LOADSTAR_SOURCE_DIR) + "/deploy/examples/" + daemon + ".yaml");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(text.empty());
    std::string::size_type at;
    while ((at = text.find(" /etc/loadstar/")) != std::string::npos) {
      text.replace(at, 15, " " + root + "/etc/loadstar/");
    }
    std::string config = Write(daemon + ".yaml", text);
    CliResult r = RunCli({daemon, "--config", config, "--check"});
    EXPECT_EQ(r.exit_code, 0) << daemon << ": " << r.err;
    EXPECT_EQ(r.out, "config OK\n");
  }
}

}  // namespace
}  // namespace loadstar::testing
