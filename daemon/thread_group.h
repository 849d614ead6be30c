// ThreadGroup: runs tasks each on its own thread and joins them. Finished threads are
// reaped on the next Spawn, so a long-running daemon does not accumulate them.
//
// Thread safety: Spawn and JoinAll may be called from any thread (JoinAll not from a task).
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace loadstar::daemon {

class ThreadGroup {
 public:
  ~ThreadGroup() { JoinAll(); }

  void Spawn(std::function<void()> fn) {
    std::list<Task> finished;
    {
      absl::MutexLock lock(&mu_);
      for (auto it = tasks_.begin(); it != tasks_.end();) {
        if (it->done->load()) {
          finished.splice(finished.end(), tasks_, it++);
        } else {
          ++it;
        }
      }
      auto done = std::make_shared<std::atomic<bool>>(false);
      tasks_.push_back(Task{std::thread([fn = std::move(fn), done] {
                              fn();
                              done->store(true);
                            }),
                            done});
    }
    for (Task& t : finished) t.thread.join();
  }

  void JoinAll() {
    while (true) {
      std::list<Task> tasks;
      {
        absl::MutexLock lock(&mu_);
        if (tasks_.empty()) return;
        tasks.swap(tasks_);
      }
      for (Task& t : tasks) t.thread.join();
    }
  }

 private:
  struct Task {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  absl::Mutex mu_;
  std::list<Task> tasks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::daemon
