#include "base/env.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>

#include <fmt/format.h>

#include "base/dtype.h"
#include "tests/util/test_util.h"

namespace loadstar {
namespace {

TEST(EnvTest, AtomicWriteReplacesWholeFile) {
  testing::TempDir dir;
  Env* env = Env::Default();
  std::string path = dir.Join("f.txt");
  ASSERT_TRUE(WriteFileAtomically(env, path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(env, path, "second version").ok());
  absl::StatusOr<std::string> data = ReadFileToString(env, path);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, "second version");
  // No temp files are left beside it.
  EXPECT_EQ(env->GetChildren(dir.path())->size(), 1u);
}

// A rename that fails must leave the old content and no temp file.
class FailingRenameEnv : public EnvWrapper {
 public:
  using EnvWrapper::EnvWrapper;
  absl::Status RenameFile(const std::string&, const std::string&) override {
    return absl::InternalError("injected rename failure");
  }
};

TEST(EnvTest, AtomicWriteFailureKeepsOldFile) {
  testing::TempDir dir;
  std::string path = dir.Join("f.txt");
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), path, "old").ok());
  FailingRenameEnv env(Env::Default());
  absl::Status status = WriteFileAtomically(&env, path, "new");
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(*ReadFileToString(Env::Default(), path), "old");
  EXPECT_EQ(Env::Default()->GetChildren(dir.path())->size(), 1u);
}

TEST(EnvTest, ReadMissingFileIsNotFound) {
  testing::TempDir dir;
  EXPECT_EQ(ReadFileToString(Env::Default(), dir.Join("nope")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(EnvTest, ReadRefusesOversizedFile) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), dir.Join("big"), "0123456789").ok());
  EXPECT_EQ(ReadFileToString(Env::Default(), dir.Join("big"), 4).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Direct writes (O_DIRECT where the filesystem takes it): aligned appends bypass the page
// cache, an unaligned tail turns the file buffered, and the bytes read back are exactly
// what was appended either way. (tmpfs refused O_DIRECT at open before Linux 6.6, which
// gives a buffered file; newer kernels accept it.)
void ExpectDirectWriteRoundTrips(const std::string& path) {
  Env* env = Env::Default();
  auto file = env->NewWritableFile(path, {.direct_io = true});
  ASSERT_TRUE(file.ok()) << file.status();
  const bool opened_direct = (*file)->direct();
  const size_t block = 3 * kDirectIoAlignment;
  std::unique_ptr<char, decltype(&std::free)> buf(
      static_cast<char*>(std::aligned_alloc(kDirectIoAlignment, block)), &std::free);
  std::string expected;
  for (int i = 0; i < 2; ++i) {
    for (size_t k = 0; k < block; ++k) buf.get()[k] = static_cast<char>(k * 7 + i);
    ASSERT_TRUE((*file)->Append(std::string_view(buf.get(), block)).ok());
    expected.append(buf.get(), block);
  }
  EXPECT_EQ((*file)->direct(), opened_direct);  // aligned appends keep it direct
  ASSERT_TRUE((*file)->Append("tail of 13 b").ok());
  expected += "tail of 13 b";
  EXPECT_FALSE((*file)->direct());
  ASSERT_TRUE((*file)->Append(std::string_view(buf.get(), block)).ok());  // buffered now
  expected.append(buf.get(), block);
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->Close().ok());
  auto data = ReadFileToString(env, path);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_TRUE(*data == expected);
}

TEST(EnvTest, DirectWritableFileRoundTrips) {
  testing::TempDir dir;
  ExpectDirectWriteRoundTrips(dir.Join("direct.bin"));
}

TEST(EnvTest, DirectWritableFileRoundTripsOnTmpfs) {
  if (!Env::Default()->IsDirectory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  const std::string path = fmt::format("/dev/shm/loadstar-env-test-{}", ::getpid());
  ExpectDirectWriteRoundTrips(path);
  Env::Default()->RemoveFile(path).IgnoreError();
}

TEST(EnvTest, PathHelpers) {
  EXPECT_EQ(JoinPath("a/b", "c"), "a/b/c");
  EXPECT_EQ(JoinPath("a/", "c"), "a/c");
  EXPECT_EQ(DirName("a/b/c"), "a/b");
  EXPECT_EQ(DirName("c"), ".");
  EXPECT_EQ(DirName("/c"), "/");
}

TEST(DTypeTest, NamesRoundTrip) {
  for (std::string_view name : {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64",
                                "F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"}) {
    std::optional<DType> dtype = ParseDType(name);
    ASSERT_TRUE(dtype.has_value()) << name;
    EXPECT_EQ(DTypeName(*dtype), name);
  }
  EXPECT_FALSE(ParseDType("F17").has_value());
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF8E5M2), 1u);
  EXPECT_EQ(ParseTorchDType("torch.bfloat16"), DType::kBF16);
  EXPECT_EQ(ParseTorchDType("float16"), DType::kF16);
  EXPECT_FALSE(ParseTorchDType("float13").has_value());
}

}  // namespace
}  // namespace loadstar
