#include "base/env.h"

#include <gtest/gtest.h>

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
