// RateLimitedEnv: caps the read bandwidth of files it opens (`loadstar worker
// --max-read-bandwidth`), so a worker sharing a disk with other services leaves them
// room. Reads from every file share one budget.
//
// Files it returns have no OS descriptor (fd() == -1), so the load pipeline reads them
// through Read() (pread engine), where the limit applies.
//
// Thread safety: as Env.
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "base/env.h"

namespace loadstar::daemon {

class RateLimitedEnv : public EnvWrapper {
 public:
  RateLimitedEnv(Env* target, double bytes_per_second)
      : EnvWrapper(target), bytes_per_second_(bytes_per_second) {}

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path, const OpenOptions& options) override {
    auto file = target()->NewRandomAccessFile(path, options);
    if (!file.ok()) return file.status();
    return std::unique_ptr<RandomAccessFile>(new File(this, std::move(*file)));
  }

  // Blocks until `bytes` more fit in the budget.
  void Throttle(uint64_t bytes) {
    using Clock = std::chrono::steady_clock;
    Clock::time_point until;
    {
      absl::MutexLock lock(&mu_);
      Clock::time_point now = Clock::now();
      next_ = std::max(next_, now) +
              std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(static_cast<double>(bytes) / bytes_per_second_));
      until = next_;
    }
    std::this_thread::sleep_until(until);
  }

 private:
  class File : public RandomAccessFile {
   public:
    File(RateLimitedEnv* env, std::unique_ptr<RandomAccessFile> base)
        : RandomAccessFile(base->path()), env_(env), base_(std::move(base)) {}
    absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* dst) const override {
      env_->Throttle(n);
      return base_->Read(offset, n, dst);
    }
    uint64_t Size() const override { return base_->Size(); }
    bool direct() const override { return base_->direct(); }

   private:
    RateLimitedEnv* env_;
    std::unique_ptr<RandomAccessFile> base_;
  };

  const double bytes_per_second_;
  absl::Mutex mu_;
  std::chrono::steady_clock::time_point next_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::daemon
