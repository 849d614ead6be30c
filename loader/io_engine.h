// IoEngine: reads (file, offset, length) requests into caller-owned buffers and reports
// each completion through a callback. Two implementations:
//   - UringIoEngine (uring_io_engine.cc): io_uring with a deep queue; the kernel does the
//     reads (straight into the buffer with O_DIRECT), one reaper thread runs callbacks.
//   - PreadIoEngine (pread_io_engine.cc): pread(2) / RandomAccessFile::Read on a thread
//     pool, or inline on the submitting thread (threads == 0). It serves files without an
//     OS descriptor (fd() == -1), kernels or sandboxes without io_uring, and buffered reads
//     of page-cache-resident files, where copying on the caller's core keeps the bytes hot
//     in its cache for the checksum that follows.
//
// Contract:
//  1. `dst` stays valid and untouched until the callback has run.
//  2. For a direct() file, offset, length and dst are multiples of kDirectIoAlignment.
//  3. A read returns the number of bytes read; it is short only at end of file (an
//     O_DIRECT read of a file's unaligned tail returns the bytes up to EOF).
//  4. Every callback runs exactly once, possibly on an engine thread and possibly before
//     Submit returns; it must not block for long nor call Submit (the engine thread that
//     runs it is the one that frees queue room); hand heavy work to another thread.
//  5. Submit and the destructor are thread-safe with respect to each other's callers;
//     the destructor waits for every submitted read's callback.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/env.h"

namespace loadstar::loader {

struct ReadRequest {
  const RandomAccessFile* file = nullptr;
  uint64_t offset = 0;
  size_t length = 0;
  char* dst = nullptr;
};

// Receives the byte count read, or the error.
using ReadCallback = std::function<void(absl::StatusOr<size_t>)>;

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  // "io_uring" or "pread".
  virtual std::string name() const = 0;
  // Starts a read. Blocks while the engine's queue is full.
  virtual void Submit(const ReadRequest& request, ReadCallback done) = 0;
};

struct IoEngineOptions {
  // "io_uring" (falls back to pread, logged once, when io_uring is unavailable) or "pread".
  std::string kind = "io_uring";
  // Reads in flight for io_uring.
  int queue_depth = 64;
  // pread worker threads; 0 runs each read inline on the submitting thread.
  int pread_threads = 0;
};

// Makes the requested engine, or the pread fallback when io_uring cannot be set up
// (io_uring_queue_init fails, e.g. under seccomp or io_uring_disabled).
absl::StatusOr<std::unique_ptr<IoEngine>> CreateIoEngine(const IoEngineOptions& options);

// Both engines, for tests and for callers that need a specific one.
absl::StatusOr<std::unique_ptr<IoEngine>> CreateUringIoEngine(int queue_depth);
std::unique_ptr<IoEngine> CreatePreadIoEngine(int threads);

// One synchronous read through `engine` (blocks the caller until the callback ran).
absl::StatusOr<size_t> ReadSync(IoEngine& engine, const ReadRequest& request);

}  // namespace loadstar::loader
