// Env: everything loadstar does with the operating system's files and clock goes through
// this interface, so tests can wrap it (EnvWrapper) to inject a full disk, a failing fsync
// or rename, or a short read in a few lines. Modeled on LevelDB's Env.
//
// Thread safety: Env methods may be called concurrently from any thread.
// RandomAccessFile::Read is thread-safe; WritableFile is not (one writer at a time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loadstar {

// O_DIRECT reads and writes need buffer address, file offset and length aligned to this.
inline constexpr size_t kDirectIoAlignment = 4096;

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // When direct() is true, an Append whose address, length and file offset are all
  // multiples of kDirectIoAlignment bypasses the page cache; any other Append (the tail of
  // a file) makes the file buffered from then on. Either way the bytes land in order.
  virtual absl::Status Append(std::string_view data) = 0;
  // Flushes data and metadata to stable storage (fsync).
  virtual absl::Status Sync() = 0;
  virtual absl::Status Close() = 0;
  // True while appends can bypass the page cache (opened with direct_io on a filesystem
  // that supports O_DIRECT, and no unaligned Append yet).
  virtual bool direct() const { return false; }
};

class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads up to `n` bytes at `offset` into `dst`; returns the count read, which is short
  // only at end of file. When direct() is true, offset, n and dst must be aligned to
  // kDirectIoAlignment.
  virtual absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* dst) const = 0;
  virtual uint64_t Size() const = 0;
  // The OS descriptor, for I/O engines that submit reads themselves (io_uring); -1 when
  // the file has none (a wrapped or in-memory file): use Read() then.
  virtual int fd() const { return -1; }
  // True when the file was opened with O_DIRECT (it bypasses the page cache).
  virtual bool direct() const { return false; }
  const std::string& path() const { return path_; }

 protected:
  explicit RandomAccessFile(std::string path) : path_(std::move(path)) {}

 private:
  std::string path_;
};

struct OpenOptions {
  // Ask for O_DIRECT. A filesystem that refuses it (tmpfs) gives a buffered file instead;
  // check RandomAccessFile::direct() / WritableFile::direct().
  bool direct_io = false;
};

class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX Env. Never deleted.
  static Env* Default();

  // Creates or truncates `path`.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path, const OpenOptions& options = {}) = 0;
  virtual absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path, const OpenOptions& options = {}) = 0;

  virtual bool FileExists(const std::string& path) = 0;
  virtual bool IsDirectory(const std::string& path) = 0;
  virtual absl::StatusOr<uint64_t> GetFileSize(const std::string& path) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..", sorted.
  virtual absl::StatusOr<std::vector<std::string>> GetChildren(const std::string& dir) = 0;
  // mkdir -p.
  virtual absl::Status CreateDirs(const std::string& path) = 0;
  virtual absl::Status RemoveFile(const std::string& path) = 0;
  // rm -rf; OK if `path` does not exist.
  virtual absl::Status RemoveRecursively(const std::string& path) = 0;
  // Atomic rename(2); replaces an existing file or empty directory at `to`.
  virtual absl::Status RenameFile(const std::string& from, const std::string& to) = 0;
  // fsyncs a directory so that renames and creations inside it are durable.
  virtual absl::Status SyncDir(const std::string& dir) = 0;
  // Bytes free to unprivileged users on the filesystem holding `path`.
  virtual absl::StatusOr<uint64_t> GetFreeSpace(const std::string& path) = 0;

  virtual uint64_t NowMicros() = 0;
  virtual void SleepForMicros(uint64_t micros) = 0;
};

// Forwards every call to another Env; override what a test needs to change.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path, const OpenOptions& options = {}) override {
    return target_->NewWritableFile(path, options);
  }
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path, const OpenOptions& options) override {
    return target_->NewRandomAccessFile(path, options);
  }
  bool FileExists(const std::string& path) override { return target_->FileExists(path); }
  bool IsDirectory(const std::string& path) override { return target_->IsDirectory(path); }
  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    return target_->GetFileSize(path);
  }
  absl::StatusOr<std::vector<std::string>> GetChildren(const std::string& dir) override {
    return target_->GetChildren(dir);
  }
  absl::Status CreateDirs(const std::string& path) override {
    return target_->CreateDirs(path);
  }
  absl::Status RemoveFile(const std::string& path) override {
    return target_->RemoveFile(path);
  }
  absl::Status RemoveRecursively(const std::string& path) override {
    return target_->RemoveRecursively(path);
  }
  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    return target_->RenameFile(from, to);
  }
  absl::Status SyncDir(const std::string& dir) override { return target_->SyncDir(dir); }
  absl::StatusOr<uint64_t> GetFreeSpace(const std::string& path) override {
    return target_->GetFreeSpace(path);
  }
  uint64_t NowMicros() override { return target_->NowMicros(); }
  void SleepForMicros(uint64_t micros) override { target_->SleepForMicros(micros); }

 private:
  Env* target_;
};

// Reads a whole (small) file. Refuses files larger than `max_bytes`.
absl::StatusOr<std::string> ReadFileToString(Env* env, const std::string& path,
                                             uint64_t max_bytes = 256ull << 20);

// Writes `data` to `path` so that a reader sees either the old file or the whole new one:
// write to a temp name beside it, fsync, rename over, fsync the directory.
absl::Status WriteFileAtomically(Env* env, const std::string& path, std::string_view data);

// "a/b" + "c" -> "a/b/c".
std::string JoinPath(std::string_view a, std::string_view b);
// "a/b/c" -> "a/b"; "c" -> ".".
std::string DirName(std::string_view path);

}  // namespace loadstar
