#include "loader/io_engine.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "base/env.h"
#include "gtest/gtest.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/test_util.h"

namespace loadstar::loader {
namespace {

struct AlignedFree {
  void operator()(char* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<char[], AlignedFree>;
Buffer AlignedBuffer(size_t n) {
  return Buffer(static_cast<char*>(std::aligned_alloc(kDirectIoAlignment, n)));
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 4096) & 0xff);
  return s;
}

class IoEngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<IoEngine> MakeEngine() {
    if (GetParam() == "pread-pool") return CreatePreadIoEngine(3);
    if (GetParam() == "pread-inline") return CreatePreadIoEngine(0);
    auto engine = CreateUringIoEngine(8);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return *std::move(engine);
  }
  loadstar::testing::TempDir dir_;
};

// A file whose size is not a multiple of 4 KiB, read with O_DIRECT in aligned pieces:
// the last read is rounded up and comes back short at EOF.
TEST_P(IoEngineTest, ReadsWholeFileIncludingUnalignedTail) {
  const size_t size = 5 * 4096 * 16 + 1234;
  std::string data = Pattern(size);
  std::string path = dir_.Join("f.bin");
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), path, data).ok());
  for (bool direct : {false, true}) {
    auto file = Env::Default()->NewRandomAccessFile(path, OpenOptions{direct});
    ASSERT_TRUE(file.ok()) << file.status();
    std::unique_ptr<IoEngine> engine = MakeEngine();
    const size_t chunk = 16 * 4096;
    const size_t padded = (size + 4095) / 4096 * 4096;
    Buffer buf = AlignedBuffer(padded);
    absl::Mutex mu;
    int done = 0;
    size_t total = 0;
    for (size_t off = 0; off < padded; off += chunk) {
      size_t len = std::min(chunk, padded - off);
      engine->Submit(ReadRequest{file->get(), off, len, buf.get() + off},
                     [&](absl::StatusOr<size_t> r) {
                       ASSERT_TRUE(r.ok()) << r.status();
                       absl::MutexLock lock(&mu);
                       total += *r;
                       ++done;
                     });
    }
    engine.reset();  // waits for every callback
    EXPECT_EQ(done, static_cast<int>((padded + chunk - 1) / chunk));
    EXPECT_EQ(total, size);
    EXPECT_EQ(std::memcmp(buf.get(), data.data(), size), 0) << "direct=" << direct;
  }
}

TEST_P(IoEngineTest, ReadsFilesWithoutDescriptor) {
  std::string data = Pattern(3 * 4096);
  std::string path = dir_.Join("g.bin");
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), path, data).ok());
  testing::NoFdEnv env(Env::Default());
  auto file = env.NewRandomAccessFile(path, OpenOptions{});
  ASSERT_TRUE(file.ok());
  ASSERT_EQ((*file)->fd(), -1);
  std::unique_ptr<IoEngine> engine = MakeEngine();
  Buffer buf = AlignedBuffer(data.size());
  auto n = ReadSync(*engine, ReadRequest{file->get(), 4096, 2 * 4096, buf.get()});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u * 4096);
  EXPECT_EQ(std::memcmp(buf.get(), data.data() + 4096, 2 * 4096), 0);
}

TEST_P(IoEngineTest, ReportsReadErrors) {
  std::string path = dir_.Join("h.bin");
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), path, Pattern(4096)).ok());
  auto file = Env::Default()->NewRandomAccessFile(path, OpenOptions{true});
  ASSERT_TRUE(file.ok());
  std::unique_ptr<IoEngine> engine = MakeEngine();
  if (!(*file)->direct()) GTEST_SKIP() << "filesystem refuses O_DIRECT";
  // A misaligned O_DIRECT buffer is EINVAL.
  Buffer buf = AlignedBuffer(3 * 4096);
  auto n = ReadSync(*engine, ReadRequest{file->get(), 0, 4096, buf.get() + 1});
  EXPECT_FALSE(n.ok());
}

INSTANTIATE_TEST_SUITE_P(Engines, IoEngineTest,
                         ::testing::Values("io_uring", "pread-pool", "pread-inline"));

TEST(CreateIoEngineTest, KindsAndErrors) {
  auto uring = CreateIoEngine(IoEngineOptions{"io_uring", 16, 0});
  ASSERT_TRUE(uring.ok());
  EXPECT_TRUE((*uring)->name() == "io_uring" || (*uring)->name() == "pread");
  auto pread = CreateIoEngine(IoEngineOptions{"pread", 16, 2});
  ASSERT_TRUE(pread.ok());
  EXPECT_EQ((*pread)->name(), "pread");
  EXPECT_EQ(CreateIoEngine(IoEngineOptions{"aio", 16, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateUringIoEngine(0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loadstar::loader
