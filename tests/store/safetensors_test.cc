// Every safetensors validation rule of SPEC §4, each with its own malformed file.
#include "store/safetensors.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/safetensors_writer.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using ::testing::HasSubstr;

// [u64 LE len(header)][header][data]
std::string File(std::string_view header, std::string_view data = "") {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out.append(header);
  out.append(data);
  return out;
}

// The error message of parsing `bytes`; fails the test if it parses or the code is wrong.
std::string Error(std::string_view bytes) {
  absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(bytes, "f.safetensors");
  EXPECT_FALSE(parsed.ok());
  if (parsed.ok()) return "<parsed>";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  std::string message(parsed.status().message());
  EXPECT_THAT(message, HasSubstr("f.safetensors"));
  return message;
}

TEST(SafetensorsTest, ParsesValidFile) {
  std::string header = R"({"__metadata__":{"format":"pt"},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},)"
                       R"("a":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]},)"
                       R"("s":{"dtype":"I16","shape":[],"data_offsets":[12,14]},)"
                       R"("e":{"dtype":"F16","shape":[0,3],"data_offsets":[14,14]}}   )";
  absl::StatusOr<SafetensorsFile> file =
      ParseSafetensors(File(header, std::string(14, 'x')), "f.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->tensors.size(), 4u);
  EXPECT_EQ(file->tensors[0].name, "a");  // sorted by offset
  EXPECT_EQ(file->tensors[1].name, "b");
  EXPECT_EQ(file->tensors[1].dtype, DType::kF32);
  EXPECT_EQ(file->tensors[1].shape, std::vector<int64_t>{2});
  EXPECT_EQ(file->tensors[1].begin, 4u);
  EXPECT_EQ(file->tensors[1].size(), 8u);
  EXPECT_TRUE(file->Find("s")->shape.empty());
  EXPECT_EQ(file->Find("e")->size(), 0u);
  EXPECT_EQ(file->metadata.at("format"), "pt");
  EXPECT_EQ(file->data_offset, 8 + header.size());
  EXPECT_EQ(file->file_size, 8 + header.size() + 14);
}

TEST(SafetensorsTest, EmptyHeaderObjectIsValid) {
  ASSERT_TRUE(ParseSafetensors(File("{}"), "f").ok());
}

TEST(SafetensorsTest, FileShorterThanEightBytes) {
  EXPECT_THAT(Error("1234567"), HasSubstr("file is 7 bytes, too short"));
  EXPECT_THAT(Error(""), HasSubstr("file is 0 bytes"));
}

TEST(SafetensorsTest, HeaderLengthOverLimit) {
  std::string bytes(8, '\0');
  uint64_t n = kMaxSafetensorsHeaderBytes + 1;
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  EXPECT_THAT(Error(bytes), HasSubstr("header length 100000001 exceeds the limit"));
  EXPECT_THAT(Error(std::string(8, '\xff')), HasSubstr("exceeds the limit"));
}

TEST(SafetensorsTest, HeaderPastEndOfFile) {
  std::string bytes = File("{}");
  bytes[0] = 3;  // claims 3 bytes, file has 2
  EXPECT_THAT(Error(bytes), HasSubstr("header length 3 runs past the end of the file"));
}

TEST(SafetensorsTest, HeaderNotUtf8) {
  EXPECT_THAT(Error(File("{\"\xff\xfe\":1}")), HasSubstr("header is not valid UTF-8"));
  EXPECT_THAT(Error(File("{\"\xc0\xaf\":1}")), HasSubstr("not valid UTF-8"));  // overlong
}

TEST(SafetensorsTest, HeaderNotJson) {
  EXPECT_THAT(Error(File("{\"a\":")), HasSubstr("header: not valid JSON"));
  EXPECT_THAT(Error(File("")), HasSubstr("not valid JSON"));
}

TEST(SafetensorsTest, DeeplyNestedHeaderIsRefusedBeforeParsing) {
  std::string deep = R"({"t":{"dtype":"U8","shape":)" + std::string(100000, '[') +
                     std::string(100000, ']') + R"(,"data_offsets":[0,0]}})";
  EXPECT_THAT(Error(File(deep)), HasSubstr("header: JSON nested deeper than 64 levels"));
  // Brackets inside strings do not count.
  std::string name(1000, '[');
  ASSERT_TRUE(ParseSafetensors(File(R"({"__metadata__":{"k":")" + name + R"("}})"), "f").ok());
}

TEST(SafetensorsTest, HeaderNotAnObject) {
  EXPECT_THAT(Error(File("[1,2]")), HasSubstr("header must be a JSON object, not array"));
}

TEST(SafetensorsTest, HeaderWithLeadingWhitespace) {
  EXPECT_THAT(Error(File(" {}")), HasSubstr("header must start with '{'"));
}

TEST(SafetensorsTest, NullMetadataIsNoMetadata) {
  absl::StatusOr<SafetensorsFile> file = ParseSafetensors(File(R"({"__metadata__":null})"), "f");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->metadata.empty());
}

TEST(SafetensorsTest, EntryNotAnObject) {
  EXPECT_THAT(Error(File(R"({"t":5})")), HasSubstr("tensor \"t\": entry must be an object"));
}

TEST(SafetensorsTest, DuplicateTensorName) {
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                         R"("t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                         "xx")),
              HasSubstr("duplicate JSON key \"t\""));
}

TEST(SafetensorsTest, UnknownDtype) {
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"F12","shape":[1],"data_offsets":[0,1]}})", "x")),
              HasSubstr("tensor \"t\": unknown dtype \"F12\""));
  EXPECT_THAT(Error(File(R"({"t":{"dtype":7,"shape":[1],"data_offsets":[0,1]}})", "x")),
              HasSubstr("tensor \"t\": \"dtype\" must be a string"));
}

TEST(SafetensorsTest, ExtraKeyInEntry) {
  EXPECT_THAT(
      Error(File(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}})", "x")),
      HasSubstr("tensor \"t\": unknown key \"x\""));
}

TEST(SafetensorsTest, MissingKeyInEntry) {
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","shape":[1]}})", "x")),
              HasSubstr("tensor \"t\": missing key \"data_offsets\""));
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","data_offsets":[0,1]}})", "x")),
              HasSubstr("tensor \"t\": missing key \"shape\""));
  EXPECT_THAT(Error(File(R"({"t":{"shape":[1],"data_offsets":[0,1]}})", "x")),
              HasSubstr("tensor \"t\": missing key \"dtype\""));
}

TEST(SafetensorsTest, BadShape) {
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", "x")),
              HasSubstr("tensor \"t\": shape dimension -1 is not a non-negative integer"));
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", "x")),
              HasSubstr("shape dimension 1.5"));
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","shape":"1","data_offsets":[0,1]}})", "x")),
              HasSubstr("\"shape\" must be an array"));
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1]}})", "x")),
              HasSubstr("shape dimension array is not"));
}

TEST(SafetensorsTest, BadDataOffsets) {
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "x")),
              HasSubstr("\"data_offsets\" must be [BEGIN, END]"));
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,-1]}})", "x")),
              HasSubstr("\"data_offsets\" must be [BEGIN, END]"));
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}})", "x")),
              HasSubstr("tensor \"t\": data_offsets [1, 0] end before begin"));
}

TEST(SafetensorsTest, ElementCountOverflow) {
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],)"
                         R"("data_offsets":[0,0]}})")),
              HasSubstr("tensor \"t\": element count of shape [4294967296, 4294967296] "
                        "overflows"));
  // The multiplication by the dtype size overflows on its own.
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"F64","shape":[4611686018427387904],)"
                         R"("data_offsets":[0,0]}})")),
              HasSubstr("overflows"));
}

TEST(SafetensorsTest, SizeMismatch) {
  EXPECT_THAT(Error(File(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,7]}})",
                         std::string(7, 'x'))),
              HasSubstr("tensor \"t\": F32 [2] needs 8 bytes but data_offsets [0, 7] hold 7"));
}

TEST(SafetensorsTest, HoleBetweenTensors) {
  EXPECT_THAT(Error(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                         R"("b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
                         "xxx")),
              HasSubstr("tensor \"b\": data_offsets [2, 3] leave a hole (expected BEGIN 1 "
                        "after tensor \"a\")"));
}

TEST(SafetensorsTest, DataNotStartingAtZero) {
  EXPECT_THAT(Error(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "xx")),
              HasSubstr("tensor \"a\": data_offsets [1, 2] leave a hole (expected BEGIN 0)"));
}

TEST(SafetensorsTest, OverlappingTensors) {
  EXPECT_THAT(Error(File(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                         R"("b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
                         "xxx")),
              HasSubstr("tensor \"b\": data_offsets [1, 3] overlap (expected BEGIN 2"));
}

TEST(SafetensorsTest, AliasedTensors) {
  EXPECT_THAT(Error(File(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                         R"("b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                         "xx")),
              HasSubstr("data_offsets [0, 2] overlap"));
}

TEST(SafetensorsTest, DataShorterThanTensors) {
  EXPECT_THAT(Error(File(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "xx")),
              HasSubstr("tensors cover 4 bytes of data but the file holds 2 bytes after the "
                        "header (last tensor \"a\")"));
}

TEST(SafetensorsTest, TrailingBytesAfterData) {
  EXPECT_THAT(Error(File(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "xxx")),
              HasSubstr("the data must end exactly at end of file"));
  EXPECT_THAT(Error(File("{}", "x")), HasSubstr("tensors cover 0 bytes"));
}

TEST(SafetensorsTest, BadMetadata) {
  EXPECT_THAT(Error(File(R"({"__metadata__":{"a":1}})")),
              HasSubstr("__metadata__ value of \"a\" must be a string"));
  EXPECT_THAT(Error(File(R"({"__metadata__":[]})")), HasSubstr("__metadata__ must be an object"));
}

TEST(SafetensorsTest, ReadsThroughEnvAndNamesThePath) {
  loadstar::testing::TempDir dir;
  std::string path = dir.Join("x.safetensors");
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), path, "short").ok());
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(Env::Default(), path);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path + ": file is 5 bytes"));

  std::string big(8, '\0');
  big[3] = 1;  // N = 16 MiB, file is only 8 bytes: must fail before allocating.
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), path, big).ok());
  EXPECT_THAT(std::string(ReadSafetensors(Env::Default(), path).status().message()),
              HasSubstr("runs past the end of the file"));
  EXPECT_EQ(ReadSafetensors(Env::Default(), dir.Join("missing")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SafetensorsWriterTest, WritesWhatTheReaderReadsBack) {
  loadstar::testing::TempDir dir;
  std::string path = dir.Join("w.safetensors");
  std::vector<TensorInput> tensors;
  tensors.push_back(TensorInput::FromBytes({"z", DType::kF16, {3}}, "abcdef"));
  tensors.push_back(TensorInput::FromBytes({"a", DType::kU8, {}}, "q"));
  tensors.push_back(TensorInput::FromBytes({"e", DType::kF32, {0}}, ""));
  ASSERT_TRUE(WriteSafetensors(Env::Default(), path, std::move(tensors), {{"format", "pt"}}).ok());
  std::string bytes = ReadFileToString(Env::Default(), path).value();
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(Env::Default(), path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->data_offset % 8, 0u);  // header padded like the reference writer
  EXPECT_EQ(file->tensors[0].name, "z");
  EXPECT_EQ(bytes.substr(file->data_offset + file->Find("z")->begin, 6), "abcdef");
  EXPECT_EQ(bytes.substr(file->data_offset + file->Find("a")->begin, 1), "q");
  EXPECT_EQ(file->metadata.at("format"), "pt");
  EXPECT_EQ(Env::Default()->GetChildren(dir.path()).value(), std::vector<std::string>{"w.safetensors"});
}

TEST(SafetensorsWriterTest, RejectsBadSpecsAndSizeMismatch) {
  std::vector<TensorInput> dup;
  dup.push_back(TensorInput::FromBytes({"a", DType::kU8, {1}}, "x"));
  dup.push_back(TensorInput::FromBytes({"a", DType::kU8, {1}}, "y"));
  EXPECT_THAT(std::string(SerializeSafetensors(std::move(dup)).status().message()),
              HasSubstr("tensor \"a\" appears twice"));
  std::vector<TensorInput> meta;
  meta.push_back(TensorInput::FromBytes({"__metadata__", DType::kU8, {1}}, "x"));
  EXPECT_EQ(SerializeSafetensors(std::move(meta)).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<TensorInput> short_bytes;
  short_bytes.push_back(TensorInput::FromBytes({"a", DType::kF32, {2}}, "1234"));
  EXPECT_THAT(std::string(SerializeSafetensors(std::move(short_bytes)).status().message()),
              HasSubstr("in-memory tensor has 4 bytes"));
}

TEST(SafetensorsWriterTest, FailedWriteLeavesNoFile) {
  loadstar::testing::TempDir dir;
  std::vector<TensorInput> tensors;
  TensorInput failing;
  failing.spec = {"t", DType::kU8, {10}};
  failing.fill = [](uint64_t, char*, size_t) { return absl::AbortedError("producer failed"); };
  tensors.push_back(std::move(failing));
  absl::Status status = WriteSafetensors(Env::Default(), dir.Join("f.safetensors"),
                                         std::move(tensors));
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(Env::Default()->GetChildren(dir.path()).value().empty());
}

}  // namespace
}  // namespace loadstar::store
