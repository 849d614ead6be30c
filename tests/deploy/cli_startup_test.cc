// CLI start-up (issue 8 item 7): a loadstar built with CUDA maps no CUDA library until a
// GPU path runs. The loader dlopens the CUDA module (loader/device_backends.h) when CUDA
// devices are asked for, and the client dlopens libcudart when it opens a CUDA instance;
// `--help` and store commands do neither. The dynamic loader itself reports every library
// it loads (LD_DEBUG=libs), NEEDED entries and dlopen calls alike.
#include <string>

#include "gtest/gtest.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/test_util.h"

namespace loadstar {
namespace {

using testing::CommandResult;
using testing::LoadstarBinary;
using testing::RunShell;
using testing::TempDir;

constexpr const char* kCudaLibraries[] = {"libcudart", "libcublas", "libnccl", "libcuda.so",
                                          "libloadstar_cuda"};

void ExpectNoCudaLoaded(const std::string& args) {
  CommandResult r = RunShell("LD_DEBUG=libs " + LoadstarBinary() + " " + args + " 2>&1");
  EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
  // Not vacuous: the loader did report the libraries loadstar always needs.
  ASSERT_NE(r.output.find("find library=libstdc++"), std::string::npos) << r.output;
  for (const char* lib : kCudaLibraries) {
    EXPECT_EQ(r.output.find(std::string("find library=") + lib), std::string::npos)
        << "`loadstar " << args << "` loads " << lib;
    EXPECT_EQ(r.output.find(std::string("/") + lib), std::string::npos)
        << "`loadstar " << args << "` opens " << lib;
  }
}

TEST(CliStartupTest, HelpAndStoreCommandsLoadNoCudaLibrary) {
#ifndef LOADSTAR_HAVE_CUDA_MODULE
  GTEST_SKIP() << "built without CUDA: no CUDA library could be loaded at all";
#else
  TempDir dir;
  ExpectNoCudaLoaded("--help");
  ExpectNoCudaLoaded("store ls --store " + dir.Join("store"));
  // The control, so the checks above could fail: a GPU path loads the module and the
  // runtime (then loads onto the GPU, or says that this machine has none).
  testing::CheckpointBuilder builder(1);
  builder.Add("w.weight", DType::kF16, {64, 64});
  ASSERT_TRUE(builder.Write(dir.Join("src")).ok());
  CommandResult saved = RunShell(LoadstarBinary() + " store save " + dir.Join("src") +
                                 " --name m --store " + dir.Join("store") + " 2>&1");
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  CommandResult r = RunShell("LD_DEBUG=libs " + LoadstarBinary() + " load m --devices cuda --store " +
                             dir.Join("store") + " 2>&1");
  EXPECT_NE(r.output.find("libloadstar_cuda.so"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("find library=libcudart"), std::string::npos) << r.output;
  if (r.exit_code != 0) {
    EXPECT_NE(r.output.find("no usable GPU"), std::string::npos) << r.output;
  }
#endif
}

// cmake/static_deps.cmake: gRPC, Protobuf and the C libraries under them are linked from
// archives (they dominated start-up as shared libraries); Abseil stays shared so that the
// CUDA module and the executable use one copy of it.
TEST(CliStartupTest, ArchivedLibrariesAreNotMappedAbseilIsShared) {
#ifndef LOADSTAR_STATIC_DEPS
  GTEST_SKIP() << "configured with LOADSTAR_STATIC_DEPS=OFF: every library is shared";
#else
  CommandResult r = RunShell("LD_DEBUG=libs " + LoadstarBinary() + " --help 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* lib : {"libgrpc", "libgpr", "libprotobuf", "libupb", "libcares", "libre2",
                          "libssl", "libcrypto", "libsqlite3", "liburing", "libyaml-cpp"}) {
    EXPECT_EQ(r.output.find(std::string("find library=") + lib), std::string::npos)
        << "`loadstar --help` maps " << lib << " though it is linked from its archive";
  }
  EXPECT_NE(r.output.find("find library=libabsl_status.so"), std::string::npos) << r.output;
#endif
}

}  // namespace
}  // namespace loadstar
