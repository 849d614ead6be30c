// GGUF files written by the reference writer (gguf-py's GGUFWriter, through
// tests/data/gguf_reference.py): loadstar reads the same header (metadata values, tensor
// dims, types and data offsets as gguf-py's GGUFReader sees them), and its dequantization
// of every block type equals gguf-py's numpy `dequantize` bit for bit as fp32 (reference
// and SIMD kernels). Skipped when no Python with gguf + numpy is found ($LOADSTAR_PYTHON,
// <build>/pyenv/bin/python3, python3).
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "quant/ggml_dequant.h"
#include "store/gguf.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

TEST(GgufReferenceTest, ReadsGgufPyFilesAndDequantizesBitForBit) {
  std::string python = loadstar::testing::FindPython("gguf, numpy");
  if (python.empty()) {
    GTEST_SKIP() << "no python3 with gguf and numpy (set LOADSTAR_PYTHON or create "
                    "<build>/pyenv with `pip install gguf numpy`)";
  }
  loadstar::testing::TempDir dir;
  std::string command = "'" + python + "' " + LOADSTAR_SOURCE_DIR +
                        "/tests/data/gguf_reference.py '" + dir.path() + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  nlohmann::json expected = nlohmann::json::parse(
      ReadFileToString(Env::Default(), dir.Join("expected.json")).value());

  absl::StatusOr<GgufFile> file = ReadGguf(Env::Default(), dir.Join("blocks.gguf"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->alignment, expected["alignment"].get<uint32_t>());
  EXPECT_EQ(file->data_offset, expected["data_offset"].get<uint64_t>());

  const nlohmann::json& meta = expected["metadata"];
  EXPECT_EQ(file->metadata.size(), meta.size());
  EXPECT_EQ(file->GetString("general.architecture"), "llama");
  EXPECT_EQ(file->GetInt("test.u8"), 200);
  EXPECT_EQ(file->GetInt("test.i8"), -100);
  EXPECT_EQ(file->GetInt("test.u16"), 60000);
  EXPECT_EQ(file->GetInt("test.i16"), -30000);
  EXPECT_EQ(file->GetInt("test.u32"), 4000000000);
  EXPECT_EQ(file->GetInt("test.i32"), -2000000000);
  EXPECT_EQ(file->GetInt("test.u64"), meta["test.u64"].get<int64_t>());
  EXPECT_EQ(file->GetInt("test.i64"), meta["test.i64"].get<int64_t>());
  EXPECT_EQ(file->GetFloat("test.f32"), meta["test.f32"].get<double>());
  EXPECT_EQ(file->GetFloat("test.f64"), 0.1);
  EXPECT_EQ(file->GetInt("test.bool"), 1);
  EXPECT_EQ(file->GetString("test.string"), meta["test.string"].get<std::string>());
  EXPECT_EQ(file->Get("test.strings")->strings, meta["test.strings"].get<std::vector<std::string>>());
  EXPECT_EQ(file->Get("test.ints")->ints, meta["test.ints"].get<std::vector<int64_t>>());

  std::string bytes = ReadFileToString(Env::Default(), dir.Join("blocks.gguf")).value();
  ASSERT_EQ(file->tensors.size(), expected["tensors"].size());
  for (const nlohmann::json& e : expected["tensors"]) {
    const std::string name = e["name"];
    const GgufTensor* t = file->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(quant::GgmlInfo(t->type).name, e["type"].get<std::string>()) << name;
    EXPECT_EQ(t->dims, e["dims"].get<std::vector<int64_t>>()) << name;
    EXPECT_EQ(file->data_offset + t->offset, e["data_offset"].get<uint64_t>()) << name;
    EXPECT_EQ(t->size, e["nbytes"].get<uint64_t>()) << name;

    std::string want = ReadFileToString(Env::Default(), dir.Join(e["dequant"])).value();
    const quant::GgmlTypeInfo info = quant::GgmlInfo(t->type);
    const int64_t blocks = static_cast<int64_t>(t->size) / info.block_bytes;
    ASSERT_EQ(want.size(), static_cast<size_t>(blocks * info.block_elems * 4)) << name;
    const auto* in = reinterpret_cast<const uint8_t*>(bytes.data() + file->data_offset + t->offset);
    std::vector<float> ref(blocks * info.block_elems), best(ref.size());
    quant::DequantizeGgmlRef(t->type, in, blocks, ref.data());
    quant::DequantizeGgml(t->type, in, blocks, best.data());
    EXPECT_EQ(std::memcmp(ref.data(), want.data(), want.size()), 0) << name << " (reference)";
    EXPECT_EQ(std::memcmp(best.data(), want.data(), want.size()), 0) << name << " (SIMD)";
  }
}

}  // namespace
}  // namespace loadstar::store
