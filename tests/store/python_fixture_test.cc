// Reads a checkpoint written by the reference Python `safetensors` library (run through
// tests/data/make_safetensors_fixture.py) and checks every tensor byte for byte, then
// saves it into the store. Skipped when no Python with safetensors + numpy is found:
// $LOADSTAR_PYTHON, <build>/pyenv/bin/python3 (`python3 -m venv build/pyenv &&
// build/pyenv/bin/pip install safetensors numpy`), or python3 on PATH.
#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "store/safetensors.h"
#include "store/store.h"
#include "tests/store/store_test_util.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

TEST(PythonFixtureTest, ReadsFilesWrittenByTheReferenceLibrary) {
  std::string python = loadstar::testing::FindPython("safetensors, numpy");
  if (python.empty()) {
    GTEST_SKIP() << "no python3 with safetensors and numpy (set LOADSTAR_PYTHON or create "
                    "<build>/pyenv with `pip install safetensors numpy`)";
  }
  loadstar::testing::TempDir dir;
  std::string src = dir.Join("hf");
  std::string command = "'" + python + "' " + LOADSTAR_SOURCE_DIR +
                        "/tests/data/make_safetensors_fixture.py '" + src + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(Env::Default(), src + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  std::string bytes = ReadFileToString(Env::Default(), src + "/model.safetensors").value();
  nlohmann::json expected =
      nlohmann::json::parse(ReadFileToString(Env::Default(), src + "/expected.json").value());
  EXPECT_EQ(file->metadata, expected["__metadata__"].get<decltype(file->metadata)>());
  ASSERT_EQ(file->tensors.size() + 1, expected.size());

  auto store = Store::Open({.root = dir.Join("store")}).value();
  absl::StatusOr<Manifest> saved = store->Save(src, "py/fixture");
  ASSERT_TRUE(saved.ok()) << saved.status();

  for (const auto& [name, want] : expected.items()) {
    if (name == "__metadata__") continue;
    const SafetensorsTensor* tensor = file->Find(name);
    ASSERT_NE(tensor, nullptr) << name;
    EXPECT_EQ(DTypeName(tensor->dtype), want["dtype"].get<std::string>()) << name;
    EXPECT_EQ(tensor->shape, want["shape"].get<std::vector<int64_t>>()) << name;
    std::string want_bytes = FromHex(want["hex"].get<std::string>());
    EXPECT_EQ(bytes.substr(file->data_offset + tensor->begin, tensor->size()), want_bytes)
        << name;
    EXPECT_EQ(ReadStoredTensor(*store, *saved, name), want_bytes) << name;
  }
  EXPECT_TRUE(store->Verify("py/fixture").ok());
}

}  // namespace
}  // namespace loadstar::store
