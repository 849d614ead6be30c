// TensorTap (store/tensor_tap.h): bytes handed over intact to every consumer, the
// producer at most one tensor ahead of the slowest consumer, zero-byte tensors without a
// copy, and a failure on either side waking the other.
#include "store/tensor_tap.h"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loadstar::store {
namespace {

using ::testing::HasSubstr;

std::string Bytes(size_t index, uint64_t size) {
  std::string s(size, '\0');
  for (uint64_t i = 0; i < size; ++i) s[i] = static_cast<char>(index * 31 + i * 7);
  return s;
}

// Copies tensor `index` in pieces of `piece` bytes.
absl::Status Produce(TensorTap& tap, size_t index, uint64_t size, size_t piece = 1000) {
  const std::string bytes = Bytes(index, size);
  for (uint64_t offset = 0; offset < size; offset += piece) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(piece, size - offset));
    absl::Status s = tap.Copy(index, offset, bytes.data() + offset, n);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

TEST(TensorTapTest, EveryConsumerGetsEveryTensorIntact) {
  const std::vector<uint64_t> sizes = {5000, 0, 123, 70000, 1, 4096, 0, 9999};
  TensorTap tap(sizes, 3);
  std::thread producer([&] {
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] > 0) ASSERT_TRUE(Produce(tap, i, sizes[i]).ok());
    }
  });
  std::vector<std::thread> consumers;
  std::atomic<int> mismatches{0};
  for (size_t c = 0; c < 3; ++c) {
    consumers.emplace_back([&, c] {
      for (size_t i = 0; i < sizes.size(); ++i) {
        absl::StatusOr<std::string_view> got = tap.Get(c, i);
        if (!got.ok() || *got != Bytes(i, sizes[i])) ++mismatches;
        // Consumer 2 never releases: its next Get releases the earlier tensors.
        if (c != 2) tap.Release(c, i);
      }
      tap.Detach(c);
    });
  }
  producer.join();
  for (std::thread& t : consumers) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(TensorTapTest, ProducerRunsAtMostOneTensorAhead) {
  TensorTap tap(std::vector<uint64_t>(6, 100), 2);
  std::atomic<int> completed{0};
  std::thread producer([&] {
    for (size_t i = 0; i < 6; ++i) {
      if (!Produce(tap, i, 100, 10).ok()) return;
      ++completed;
    }
  });
  auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(50)); };
  settle();
  EXPECT_EQ(completed.load(), 2);  // both slots full, nothing released
  ASSERT_TRUE(tap.Get(0, 0).ok());
  tap.Release(0, 0);
  settle();
  EXPECT_EQ(completed.load(), 2);  // consumer 1 still holds tensor 0
  ASSERT_TRUE(tap.Get(1, 1).ok());  // releases tensor 0 for consumer 1
  settle();
  EXPECT_EQ(completed.load(), 3);
  // Tensor 1 stays readable for consumer 0 until it moves on.
  absl::StatusOr<std::string_view> one = tap.Get(0, 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, Bytes(1, 100));
  tap.Detach(0);
  tap.Detach(1);
  producer.join();
  EXPECT_EQ(completed.load(), 6);
}

// GetPrefix answers as soon as the bytes asked for arrived, before the tensor is whole.
TEST(TensorTapTest, PrefixIsReadableWhileTheTensorArrives) {
  TensorTap tap({1000, 10}, 1);
  const std::string bytes = Bytes(0, 1000);
  ASSERT_TRUE(tap.Copy(0, 0, bytes.data(), 300).ok());
  absl::StatusOr<std::string_view> prefix = tap.GetPrefix(0, 0, 300);
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  EXPECT_EQ(*prefix, bytes.substr(0, 300));
  absl::StatusOr<std::string_view> more;
  std::thread consumer([&] { more = tap.GetPrefix(0, 0, 800); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(tap.Copy(0, 300, bytes.data() + 300, 700).ok());
  consumer.join();
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_EQ(*more, bytes.substr(0, 800));
  EXPECT_EQ(tap.GetPrefix(0, 0, 1001).status().code(), absl::StatusCode::kInternal);
}

TEST(TensorTapTest, ConsumerFailureStopsTheWaitingProducer) {
  TensorTap tap(std::vector<uint64_t>(4, 100), 1);
  absl::Status produced;
  std::thread producer([&] {
    for (size_t i = 0; i < 4 && produced.ok(); ++i) produced = Produce(tap, i, 100);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // blocked on tensor 2
  tap.Fail(absl::ResourceExhaustedError("variant: disk full"));
  producer.join();
  EXPECT_EQ(produced.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(produced.message()), HasSubstr("disk full"));
}

TEST(TensorTapTest, ProducerFailureStopsTheWaitingConsumer) {
  TensorTap tap({100, 100}, 1);
  absl::StatusOr<std::string_view> got;
  std::thread consumer([&] { got = tap.Get(0, 1); });
  ASSERT_TRUE(Produce(tap, 0, 100).ok());
  tap.Fail(absl::CancelledError("copy stopped"));
  consumer.join();
  EXPECT_EQ(got.status().code(), absl::StatusCode::kCancelled);
  // Later calls on both sides see the same failure.
  EXPECT_EQ(tap.Copy(1, 0, "x", 1).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(tap.Get(0, 1).status().code(), absl::StatusCode::kCancelled);
}

TEST(TensorTapTest, MisuseIsAnError) {
  TensorTap tap({10, 10, 10}, 1);
  EXPECT_EQ(tap.Copy(0, 5, "12345", 5).code(), absl::StatusCode::kInternal);  // not from 0
  EXPECT_EQ(tap.Copy(0, 0, "12345678901", 11).code(), absl::StatusCode::kInternal);  // too long
  EXPECT_EQ(tap.Copy(3, 0, "1", 1).code(), absl::StatusCode::kInternal);  // no such tensor
  ASSERT_TRUE(tap.Copy(0, 0, "12345", 5).ok());
  EXPECT_EQ(tap.Copy(1, 0, "12345", 5).code(), absl::StatusCode::kInternal);  // 0 unfinished
  ASSERT_TRUE(tap.Copy(0, 5, "67890", 5).ok());
  ASSERT_TRUE(tap.Get(0, 0).ok());
  tap.Release(0, 0);
  absl::StatusOr<std::string_view> again = tap.Get(0, 0);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("released"));
  EXPECT_EQ(tap.Get(0, 7).status().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace loadstar::store
