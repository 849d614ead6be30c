// ThreadSanitizer builds only: makes absl::Mutex visible to TSan.
//
// Debian's Abseil is built without -fsanitize=thread, so absl::Mutex's lock and unlock
// are invisible to TSan and every access guarded by one is reported as a race (hundreds
// of false positives in the daemon, the loader and gRPC, which locks absl::Mutex too).
// This file interposes the Mutex and CondVar entry points: each forwards to Abseil's
// implementation (dlsym RTLD_NEXT) and tells TSan the happens-before edge it implies
// (__tsan_release before a mutex is released, __tsan_acquire after it is acquired, both
// around a condition wait). The executable's definitions take precedence over the shared
// library's, for callers inside libgrpc and libabsl too. Without TSan this file is empty.
// It lives in loadstar_base, and base/CMakeLists.txt forces it into every executable that
// links base (every test binary, the loadstar binary, benches), even one that references
// none of its symbols.
#if defined(__SANITIZE_THREAD__)

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"

extern "C" {
void __tsan_ignore_thread_begin();
void __tsan_ignore_thread_end();
}

namespace {

template <typename Fn>
Fn Real(const char* symbol) {
  void* p = dlsym(RTLD_NEXT, symbol);
  if (p == nullptr) {
    std::fprintf(stderr, "tsan_absl_mutex: %s not found\n", symbol);
    std::abort();
  }
  return reinterpret_cast<Fn>(p);
}

#define REAL(type, symbol)                   \
  static const auto real = Real<type>(symbol)

// Abseil evaluates a waiter's Condition on whichever thread releases the mutex (inside
// Unlock, Await, ...), on memory the waiter guards with the mutex, at a point that
// neither thread's __tsan_acquire/__tsan_release covers. TSan would report those reads
// against the waiter's own writes (the Condition it built, the state it guards). Accesses
// made while inside Abseil's uninstrumented mutex code are therefore ignored; the
// synchronization they imply is what the annotations around them state.
struct IgnoreAccesses {
  IgnoreAccesses() { __tsan_ignore_thread_begin(); }
  ~IgnoreAccesses() { __tsan_ignore_thread_end(); }
  IgnoreAccesses(const IgnoreAccesses&) = delete;
  IgnoreAccesses& operator=(const IgnoreAccesses&) = delete;
};

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  {
    IgnoreAccesses ignore;
    real(this);
  }
  __tsan_acquire(this);
}

void Mutex::Unlock() {
  REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  __tsan_release(this);
  {
    IgnoreAccesses ignore;
    real(this);
  }
}

bool Mutex::TryLock() {
  REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  bool locked;
  {
    IgnoreAccesses ignore;
    locked = real(this);
  }
  if (locked) __tsan_acquire(this);
  return locked;
}

void Mutex::ReaderLock() {
  REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  {
    IgnoreAccesses ignore;
    real(this);
  }
  __tsan_acquire(this);
}

void Mutex::ReaderUnlock() {
  REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  __tsan_release(this);
  {
    IgnoreAccesses ignore;
    real(this);
  }
}

void Mutex::LockWhen(const Condition& cond) {
  REAL(void (*)(Mutex*, const Condition&), "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  {
    IgnoreAccesses ignore;
    real(this, cond);
  }
  __tsan_acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
       "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool r;
  {
    IgnoreAccesses ignore;
    r = real(this, cond, timeout);
  }
  __tsan_acquire(this);
  return r;
}

void Mutex::Await(const Condition& cond) {
  REAL(void (*)(Mutex*, const Condition&), "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  __tsan_release(this);
  {
    IgnoreAccesses ignore;
    real(this, cond);
  }
  __tsan_acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
       "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  __tsan_release(this);
  bool r;
  {
    IgnoreAccesses ignore;
    r = real(this, cond, timeout);
  }
  __tsan_acquire(this);
  return r;
}

void CondVar::Wait(Mutex* mu) {
  REAL(void (*)(CondVar*, Mutex*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  {
    IgnoreAccesses ignore;
    real(this, mu);
  }
  __tsan_acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  REAL(bool (*)(CondVar*, Mutex*, absl::Duration),
       "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  bool r;
  {
    IgnoreAccesses ignore;
    r = real(this, mu, timeout);
  }
  __tsan_acquire(mu);
  return r;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  REAL(bool (*)(CondVar*, Mutex*, absl::Time),
       "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  bool r;
  {
    IgnoreAccesses ignore;
    r = real(this, mu, deadline);
  }
  __tsan_acquire(mu);
  return r;
}

ABSL_NAMESPACE_END
}  // namespace absl

// Referenced by base/CMakeLists.txt (--undefined) so the linker always pulls this object
// out of libloadstar_base.a; the libtsan runtime defines the other symbols here weakly,
// so they alone would not.
extern "C" {
int loadstar_tsan_absl_mutex_anchor = 0;
}

// Debian's gRPC, protobuf and Abseil are not instrumented either: memory they hand
// between their own threads (slices, channels, Status payloads, absl's deadlock graph)
// would show up as races through the allocation and memcpy interceptors. TSan's
// ignore_noninstrumented_modules drops interceptor calls made from such libraries only;
// every access made by our code is still checked.
extern "C" const char* __tsan_default_options() { return "ignore_noninstrumented_modules=1"; }

// io_uring completions are ordered by the kernel (submission and completion rings), which
// TSan cannot see: a request written by Submit and read by the reaper after the kernel
// completed it is not a race. The suppression names the one file that does this.
extern "C" const char* __tsan_default_suppressions() {
  return "race:loader/uring_io_engine.cc\n";
}

#endif  // __SANITIZE_THREAD__
