// Atomicity of Save / WriteVariant / Remove and of the one-pass save with quantized
// variants (SaveQuantized) under injected failures: whatever fails, no model and no
// variant appears under its name and nothing is left in the store's temp directory.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/quantized_save.h"
#include "store/store.h"
#include "tests/util/quant_test_util.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/fault_env.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using ::loadstar::testing::CheckpointBuilder;
using ::loadstar::testing::FaultEnv;
using ::loadstar::testing::TempDir;
using ::testing::HasSubstr;

class StoreFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    builder_.Shards(2);
    // ".weight": quantized by the one-pass tests' variants.
    for (int i = 0; i < 6; ++i) {
      builder_.Add("w" + std::to_string(i) + ".weight", DType::kF32, {64, 64});
    }
    ASSERT_TRUE(builder_.Write(src()).ok());
    store_ = Store::Open({.root = dir_.Join("store"), .env = &env_}).value();
  }

  std::string src() const { return dir_.Join("src"); }

  // Nothing under the name, nothing in .tmp, and a clean retry succeeds.
  void ExpectNothingLeft(const std::string& name) {
    EXPECT_FALSE(Env::Default()->FileExists(dir_.Join("store/" + name)));
    EXPECT_EQ(store_->GetManifest(name).status().code(), absl::StatusCode::kNotFound);
    EXPECT_TRUE(Env::Default()->GetChildren(dir_.Join("store/.tmp")).value().empty());
    env_.Reset();
    absl::StatusOr<Manifest> retry = store_->Save(src(), name);
    EXPECT_TRUE(retry.ok()) << retry.status();
    EXPECT_TRUE(store_->Verify(name).ok());
  }

  TempDir dir_;
  FaultEnv env_{Env::Default()};
  CheckpointBuilder builder_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreFaultTest, DiskFullMidData) {
  env_.SetWriteLimit(20000);
  absl::StatusOr<Manifest> saved = store_->Save(src(), "org/m");
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(saved.status().message()), HasSubstr("No space left on device"));
  ExpectNothingLeft("org/m");
}

TEST_F(StoreFaultTest, DiskFullWritingManifest) {
  // Everything but the last few bytes of the manifest fits.
  uint64_t needed = 0;
  {
    FaultEnv counting(Env::Default());
    auto probe = Store::Open({.root = dir_.Join("probe"), .env = &counting}).value();
    ASSERT_TRUE(probe->Save(src(), "m").ok());
    needed = static_cast<uint64_t>(counting.bytes_written());
  }
  env_.SetWriteLimit(static_cast<int64_t>(needed) - 10);
  EXPECT_EQ(store_->Save(src(), "m").status().code(), absl::StatusCode::kResourceExhausted);
  ExpectNothingLeft("m");
}

TEST_F(StoreFaultTest, FsyncOfDataFileFails) {
  env_.FailSyncMatching("data-00001.bin");
  absl::StatusOr<Manifest> saved = store_->Save(src(), "m");
  EXPECT_THAT(std::string(saved.status().message()), HasSubstr("injected: fsync"));
  ExpectNothingLeft("m");
}

TEST_F(StoreFaultTest, FsyncOfManifestFails) {
  env_.FailSyncMatching("manifest.json");
  EXPECT_FALSE(store_->Save(src(), "m").ok());
  ExpectNothingLeft("m");
}

TEST_F(StoreFaultTest, FsyncOfDirectoryFails) {
  env_.FailSyncDirMatching("/.tmp/");
  EXPECT_FALSE(store_->Save(src(), "m").ok());
  ExpectNothingLeft("m");
}

TEST_F(StoreFaultTest, RenameIntoPlaceFails) {
  env_.FailRenameMatching("/.tmp/");
  absl::StatusOr<Manifest> saved = store_->Save(src(), "m");
  EXPECT_THAT(std::string(saved.status().message()), HasSubstr("injected: rename"));
  ExpectNothingLeft("m");
}

TEST_F(StoreFaultTest, CreateFails) {
  env_.FailCreateMatching("config.json");
  EXPECT_EQ(store_->Save(src(), "m").status().code(), absl::StatusCode::kPermissionDenied);
  ExpectNothingLeft("m");
}

TEST_F(StoreFaultTest, FailedOverwriteKeepsTheOldModel) {
  ASSERT_TRUE(store_->Save(src(), "m").ok());
  Manifest before = store_->GetManifest("m").value();
  env_.SetWriteLimit(1000);
  EXPECT_FALSE(store_->Save(src(), "m", {}, SaveOptions{.overwrite = true}).ok());
  env_.Reset();
  EXPECT_EQ(store_->GetManifest("m").value(), before);
  EXPECT_TRUE(store_->Verify("m").ok());
  EXPECT_TRUE(Env::Default()->GetChildren(dir_.Join("store/.tmp")).value().empty());
}

TEST_F(StoreFaultTest, FailedVariantWriteLeavesNoVariant) {
  ASSERT_TRUE(store_->Save(src(), "m").ok());
  std::vector<TensorInput> tensors;
  tensors.push_back(TensorInput::FromBytes({"q", DType::kU8, {100000}}, std::string(100000, 'q')));
  env_.SetWriteLimit(50000);
  VariantSpec spec{.model = "m", .key = "nf4-bs64", .quantization_json = "{}"};
  EXPECT_EQ(store_->WriteVariant(spec, std::move(tensors)).status().code(),
            absl::StatusCode::kResourceExhausted);
  env_.Reset();
  EXPECT_EQ(store_->GetManifest("m", "nf4-bs64").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->List().value()[0].variants.empty());
  EXPECT_TRUE(Env::Default()->GetChildren(dir_.Join("store/.tmp")).value().empty());
}

// The one-pass save with variants: a failure in a variant's writer, in the copy, or at
// the end fails the whole save and leaves neither the model nor a variant.
class OnePassFaultTest : public StoreFaultTest {
 protected:
  absl::StatusOr<ModelWithVariants> SaveWithVariants(const std::string& name) {
    return SaveQuantized(*store_, src(), name,
                         {loadstar::testing::QuantConfigOf(quant::QuantType::kNf4, 64, true),
                          loadstar::testing::QuantConfigOf(quant::QuantType::kInt8)});
  }
  void ExpectNoVariantsLeft(const std::string& name) {
    ExpectNothingLeft(name);  // ends with a plain save of `name`
    EXPECT_TRUE(store_->List().value()[0].variants.empty());
  }
};

TEST_F(OnePassFaultTest, VariantDataFileCannotBeCreated) {
  // The variant stops at once; the copy, waiting for it to take tensors, must stop too.
  env_.FailCreateMatching("/variants/int8/data-");
  absl::StatusOr<ModelWithVariants> saved = SaveWithVariants("m");
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(saved.status().message()), HasSubstr("variant int8 of model m: "));
  EXPECT_THAT(std::string(saved.status().message()), HasSubstr("injected: create"));
  ExpectNoVariantsLeft("m");
}

TEST_F(OnePassFaultTest, FsyncOfVariantDataFails) {
  env_.FailSyncMatching("/variants/nf4-bs64-dq/data-00000.bin");
  absl::StatusOr<ModelWithVariants> saved = SaveWithVariants("m");
  EXPECT_THAT(std::string(saved.status().message()),
              HasSubstr("variant nf4-bs64-dq of model m: injected: fsync"));
  ExpectNoVariantsLeft("m");
}

TEST_F(OnePassFaultTest, FsyncOfVariantManifestFails) {
  env_.FailSyncMatching("/variants/int8/manifest.json");
  EXPECT_FALSE(SaveWithVariants("m").ok());
  ExpectNoVariantsLeft("m");
}

TEST_F(OnePassFaultTest, CopyFailsWhileVariantsWait) {
  // The model's second data file (the variants' files are under variants/).
  env_.FailCreateMatching("-save/data-00001.bin");
  absl::StatusOr<ModelWithVariants> saved = SaveWithVariants("m");
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(saved.status().message()), HasSubstr("-save/data-00001.bin"));
  ExpectNoVariantsLeft("m");
}

TEST_F(OnePassFaultTest, DiskFull) {
  // Whichever writer meets the full disk first, the save fails as a whole.
  for (int64_t limit : {0, 5000, 20000, 60000}) {
    SCOPED_TRACE(limit);
    env_.SetWriteLimit(limit);
    absl::StatusOr<ModelWithVariants> saved = SaveWithVariants("m" + std::to_string(limit));
    EXPECT_EQ(saved.status().code(), absl::StatusCode::kResourceExhausted);
    env_.Reset();
    EXPECT_FALSE(Env::Default()->FileExists(dir_.Join("store/m" + std::to_string(limit))));
    EXPECT_TRUE(Env::Default()->GetChildren(dir_.Join("store/.tmp")).value().empty());
  }
}

TEST_F(OnePassFaultTest, RenameIntoPlaceFails) {
  env_.FailRenameMatching("/.tmp/");
  EXPECT_THAT(std::string(SaveWithVariants("m").status().message()),
              HasSubstr("injected: rename"));
  ExpectNoVariantsLeft("m");
}

TEST_F(OnePassFaultTest, FailedOverwriteKeepsTheOldModelAndVariants) {
  ASSERT_TRUE(SaveWithVariants("m").ok());
  Manifest before = store_->GetManifest("m").value();
  Manifest before_int8 = store_->GetManifest("m", "int8").value();
  env_.FailSyncMatching("/variants/int8/data-");
  EXPECT_FALSE(SaveQuantized(*store_, src(), "m",
                             {loadstar::testing::QuantConfigOf(quant::QuantType::kInt8)}, {},
                             {.overwrite = true})
                   .ok());
  env_.Reset();
  EXPECT_EQ(store_->GetManifest("m").value(), before);
  EXPECT_EQ(store_->GetManifest("m", "int8").value(), before_int8);
  EXPECT_EQ(store_->List().value()[0].variants,
            (std::vector<std::string>{"int8", "nf4-bs64-dq"}));
  EXPECT_TRUE(store_->Verify("m").ok());
  EXPECT_TRUE(Env::Default()->GetChildren(dir_.Join("store/.tmp")).value().empty());
}

TEST_F(StoreFaultTest, FailedRemoveKeepsTheModel) {
  ASSERT_TRUE(store_->Save(src(), "m").ok());
  env_.FailRenameMatching("/store/m");
  EXPECT_FALSE(store_->Remove("m").ok());
  env_.Reset();
  EXPECT_TRUE(store_->Verify("m").ok());
}

}  // namespace
}  // namespace loadstar::store
