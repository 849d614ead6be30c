#include "store/checksum.h"

#include <string>

#include "gtest/gtest.h"

namespace loadstar::store {
namespace {

TEST(ChecksumTest, StreamingMatchesOneShotAcrossChunkBoundaries) {
  std::string data(10000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + 7);
  for (uint64_t chunk : {1ull, 7ull, 4096ull, 9999ull, 10000ull, 20000ull}) {
    ChunkHasher hasher(chunk);
    // Feed in odd piece sizes so pieces straddle chunk boundaries.
    for (size_t pos = 0; pos < data.size(); pos += 333) {
      hasher.Update(std::string_view(data).substr(pos, 333));
    }
    std::vector<uint64_t> sums = hasher.Finish();
    ASSERT_EQ(sums.size(), (data.size() + chunk - 1) / chunk) << chunk;
    for (size_t i = 0; i < sums.size(); ++i) {
      EXPECT_EQ(sums[i], Checksum(std::string_view(data).substr(i * chunk, chunk)));
    }
  }
}

TEST(ChecksumTest, EmptyTensorHasOneChecksum) {
  ChunkHasher hasher;
  EXPECT_EQ(hasher.Finish(), std::vector<uint64_t>{Checksum("")});
  EXPECT_EQ(ChunkChecksums(""), std::vector<uint64_t>{Checksum("")});
  EXPECT_EQ(ChecksumCount(0), 1u);
  EXPECT_EQ(ChecksumCount(kChecksumChunkBytes), 1u);
  EXPECT_EQ(ChecksumCount(kChecksumChunkBytes + 1), 2u);
}

TEST(ChecksumTest, HexRoundTrip) {
  uint64_t value = 0;
  EXPECT_EQ(ChecksumToHex(0x0123456789abcdefull), "0123456789abcdef");
  EXPECT_TRUE(ChecksumFromHex("0123456789abcdef", &value));
  EXPECT_EQ(value, 0x0123456789abcdefull);
  EXPECT_FALSE(ChecksumFromHex("0123456789ABCDEF", &value));
  EXPECT_FALSE(ChecksumFromHex("123", &value));
}

}  // namespace
}  // namespace loadstar::store
