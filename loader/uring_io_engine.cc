// io_uring implementation of IoEngine. Submitters fill the submission queue under a
// mutex; one reaper thread owns the completion queue and runs callbacks. The two queues
// are independent rings, so the reaper never contends with submitters except when it
// resubmits the rest of a short read.
#include <liburing.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/logging.h"
#include "loader/io_engine.h"
#include "spdlog/spdlog.h"

// The kernel hands each op from the submitting thread to the reaper through the rings'
// memory barriers, which ThreadSanitizer cannot see; tell it about that edge.
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#define LOADSTAR_TSAN_ACQUIRE(p) __tsan_acquire(p)
#define LOADSTAR_TSAN_RELEASE(p) __tsan_release(p)
#else
#define LOADSTAR_TSAN_ACQUIRE(p) ((void)(p))
#define LOADSTAR_TSAN_RELEASE(p) ((void)(p))
#endif

namespace loadstar::loader {
namespace {

// One read in flight. Owned by the ring (via user_data) from submit until its final
// completion; `done` counts bytes already read when a short read is continued.
struct UringOp {
  ReadRequest request;
  ReadCallback callback;
  size_t done = 0;
};

class UringIoEngine final : public IoEngine {
 public:
  explicit UringIoEngine(int queue_depth) : queue_depth_(queue_depth) {}

  absl::Status Init() {
    int rc = io_uring_queue_init(static_cast<unsigned>(queue_depth_), &ring_, 0);
    if (rc < 0) {
      return absl::UnavailableError(
          absl::StrCat("io_uring_queue_init: ", std::strerror(-rc)));
    }
    initialized_ = true;
    reaper_ = std::thread([this] { ReapLoop(); });
    return absl::OkStatus();
  }

  ~UringIoEngine() override {
    if (!initialized_) return;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](int* in_flight) { return *in_flight == 0; }, &in_flight_));
      // A NOP with null user_data tells the reaper to exit.
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, nullptr);
      io_uring_submit(&ring_);
    }
    reaper_.join();
    io_uring_queue_exit(&ring_);
  }

  std::string name() const override { return "io_uring"; }

  void Submit(const ReadRequest& request, ReadCallback done) override {
    if (request.file->fd() < 0) {
      // A file without a descriptor (wrapped or in-memory): read it the only way it can be.
      static std::once_flag logged;
      std::call_once(logged, [&] {
        spdlog::info("io_uring engine: {} has no OS descriptor; reading it with pread",
                     request.file->path());
      });
      done(request.file->Read(request.offset, request.length, request.dst));
      return;
    }
    auto* op = new UringOp{request, std::move(done), 0};
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &UringIoEngine::HasRoom));
    ++in_flight_;
    PrepLocked(op);
  }

 private:
  bool HasRoom() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ < queue_depth_; }

  // Queues the unread remainder of `op` and submits it.
  void PrepLocked(UringOp* op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    // in_flight_ <= queue_depth_ == SQ entries, so a slot is always free here.
    io_uring_prep_read(sqe, op->request.file->fd(), op->request.dst + op->done,
                       static_cast<unsigned>(op->request.length - op->done),
                       op->request.offset + op->done);
    io_uring_sqe_set_data(sqe, op);
    LOADSTAR_TSAN_RELEASE(op);
    int rc;
    do {
      rc = io_uring_submit(&ring_);
    } while (rc == -EINTR || rc == -EAGAIN);
  }

  void ReapLoop() {
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      int rc = io_uring_wait_cqe(&ring_, &cqe);
      if (rc == -EINTR) continue;
      if (rc < 0) {
        spdlog::error("io_uring_wait_cqe: {}", std::strerror(-rc));
        continue;
      }
      auto* op = static_cast<UringOp*>(io_uring_cqe_get_data(cqe));
      int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      if (op == nullptr) return;  // shutdown NOP
      LOADSTAR_TSAN_ACQUIRE(op);
      Complete(op, res);
    }
  }

  void Complete(UringOp* op, int res) {
    const ReadRequest& req = op->request;
    if (res == -EINTR || res == -EAGAIN) {
      absl::MutexLock lock(&mu_);
      PrepLocked(op);
      return;
    }
    if (res < 0) {
      Finish(op, absl::InternalError(absl::StrCat("read ", req.file->path(), " at ",
                                                  req.offset + op->done, ": ",
                                                  std::strerror(-res))));
      return;
    }
    op->done += static_cast<size_t>(res);
    uint64_t end = req.offset + op->done;
    bool more = res > 0 && op->done < req.length && end < req.file->Size();
    // An O_DIRECT read can only continue from an aligned position; a misaligned short
    // read means the end of the file.
    if (more && req.file->direct() && op->done % kDirectIoAlignment != 0) more = false;
    if (more) {
      absl::MutexLock lock(&mu_);
      PrepLocked(op);
      return;
    }
    Finish(op, op->done);
  }

  void Finish(UringOp* op, absl::StatusOr<size_t> result) {
    ReadCallback callback = std::move(op->callback);
    delete op;
    callback(std::move(result));
    absl::MutexLock lock(&mu_);
    --in_flight_;
  }

  const int queue_depth_;
  io_uring ring_{};
  bool initialized_ = false;
  std::thread reaper_;
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<IoEngine>> CreateUringIoEngine(int queue_depth) {
  if (queue_depth < 1 || queue_depth > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("io_uring queue depth ", queue_depth,
                                                   " is outside 1..4096"));
  }
  auto engine = std::make_unique<UringIoEngine>(queue_depth);
  absl::Status status = engine->Init();
  if (!status.ok()) return status;
  return std::unique_ptr<IoEngine>(std::move(engine));
}

absl::StatusOr<std::unique_ptr<IoEngine>> CreateIoEngine(const IoEngineOptions& options) {
  if (options.kind == "pread") return CreatePreadIoEngine(options.pread_threads);
  if (options.kind != "io_uring") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown I/O engine '", options.kind, "' (io_uring|pread)"));
  }
  absl::StatusOr<std::unique_ptr<IoEngine>> engine = CreateUringIoEngine(options.queue_depth);
  if (engine.ok()) return engine;
  if (absl::IsInvalidArgument(engine.status())) return engine.status();
  static std::once_flag logged;
  std::call_once(logged, [&] {
    spdlog::warn("io_uring unavailable ({}); using the pread engine",
                 std::string(engine.status().message()));
  });
  return CreatePreadIoEngine(options.pread_threads);
}

}  // namespace loadstar::loader
