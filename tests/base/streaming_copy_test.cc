// CopyAroundCache copies exactly like memcpy whatever the alignment and size (the
// streaming body covers only whole 256-byte blocks at an aligned destination; the head
// and tail go through memcpy), and touches nothing outside the destination range.
#include "base/streaming_copy.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace loadstar {
namespace {

TEST(StreamingCopyTest, CopiesExactlyAtEverySizeAndAlignment) {
  const std::vector<size_t> sizes = {0, 1, 63, 64, 255, 1023, 1024, 1025, 1300, 4096 + 17,
                                     (1u << 20) + 5};
  std::vector<char> src((2u << 20) + 256), dst((2u << 20) + 256);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i * 131 + 7);
  for (size_t n : sizes) {
    for (size_t d : {0, 1, 31, 63, 64}) {
      for (size_t s : {0, 3, 64}) {
        std::fill(dst.begin(), dst.end(), '\x5a');
        char* to = dst.data() + 64 + d;
        const char* from = src.data() + s;
        CopyAroundCache(to, from, n);
        ASSERT_EQ(std::string(to, n), std::string(from, n))
            << "size " << n << " dst+" << d << " src+" << s;
        for (char* p = dst.data(); p < to; ++p) ASSERT_EQ(*p, '\x5a') << "before, size " << n;
        for (char* p = to + n; p < dst.data() + dst.size(); ++p) {
          ASSERT_EQ(*p, '\x5a') << "after, size " << n << " dst+" << d;
        }
      }
    }
  }
}

TEST(StreamingCopyTest, NamesTheImplementationItPicked) {
  const std::string kind = CopyAroundCacheKind();
#if defined(__x86_64__)
  EXPECT_TRUE(kind == "avx512" || kind == "avx2" || kind == "sse2") << kind;
#else
  EXPECT_EQ(kind, "memcpy");
#endif
}

}  // namespace
}  // namespace loadstar
