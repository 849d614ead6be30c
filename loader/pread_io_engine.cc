// pread implementation of IoEngine: RandomAccessFile::Read (pread(2) for POSIX files) on
// a small thread pool, or inline on the submitting thread when threads == 0.
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "loader/io_engine.h"

namespace loadstar::loader {
namespace {

class PreadIoEngine final : public IoEngine {
 public:
  explicit PreadIoEngine(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { WorkLoop(); });
  }

  ~PreadIoEngine() override {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    // Workers drain the queue before they exit, so every callback runs.
    for (std::thread& t : workers_) t.join();
  }

  std::string name() const override { return "pread"; }

  void Submit(const ReadRequest& request, ReadCallback done) override {
    if (workers_.empty()) {
      done(request.file->Read(request.offset, request.length, request.dst));
      return;
    }
    absl::MutexLock lock(&mu_);
    queue_.push_back(Op{request, std::move(done)});
  }

 private:
  struct Op {
    ReadRequest request;
    ReadCallback callback;
  };

  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || stopping_;
  }

  void WorkLoop() {
    for (;;) {
      Op op;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &PreadIoEngine::HasWorkOrStopping));
        if (queue_.empty()) return;  // stopping and drained
        op = std::move(queue_.front());
        queue_.pop_front();
      }
      op.callback(op.request.file->Read(op.request.offset, op.request.length, op.request.dst));
    }
  }

  absl::Mutex mu_;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace

std::unique_ptr<IoEngine> CreatePreadIoEngine(int threads) {
  return std::make_unique<PreadIoEngine>(threads < 0 ? 0 : threads);
}

absl::StatusOr<size_t> ReadSync(IoEngine& engine, const ReadRequest& request) {
  absl::Mutex mu;
  bool done = false;
  absl::StatusOr<size_t> result;
  engine.Submit(request, [&](absl::StatusOr<size_t> r) {
    absl::MutexLock lock(&mu);
    result = std::move(r);
    done = true;
  });
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&done));
  return result;
}

}  // namespace loadstar::loader
