// Clock: wall-clock time for the control plane. Wall time (not steady) because lease
// expiry and idle times are persisted and must mean the same thing after a restart.
// ManualClock lets tests drive keep-alive, lease and heartbeat timeouts without sleeping.
#pragma once

#include <chrono>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace loadstar::daemon {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMillis() = 0;  // unix milliseconds
  static Clock* Real();
};

class SystemClock : public Clock {
 public:
  int64_t NowMillis() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

inline Clock* Clock::Real() {
  static SystemClock clock;
  return &clock;
}

// Thread-safe; time moves only through Advance.
class ManualClock : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  int64_t NowMillis() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(double seconds) {
    absl::MutexLock lock(&mu_);
    now_ += static_cast<int64_t>(seconds * 1000);
  }

 private:
  absl::Mutex mu_;
  int64_t now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::daemon
