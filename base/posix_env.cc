// The POSIX implementation of Env.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/env.h"

namespace loadstar {
namespace {

absl::Status ErrnoStatus(std::string_view what, const std::string& path, int err) {
  std::string msg = absl::StrCat(std::string(what), " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
    case EISDIR:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::InternalError(msg);
  }
}

bool IsAligned(uint64_t value) { return value % kDirectIoAlignment == 0; }

// With O_DIRECT (direct_ true), aligned appends go straight to the device; the first
// unaligned one (a file's tail: the store pads tensors to 4 KiB but not the end of a
// file) clears O_DIRECT with fcntl and is written through the page cache, as is
// everything after it; fsync then flushes that tail. A filesystem that accepts O_DIRECT
// at open but refuses a write with EINVAL gets the same fallback.
class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, bool direct)
      : path_(std::move(path)), fd_(fd), direct_(direct) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Append(std::string_view data) override {
    if (direct_) {
      // The aligned head goes direct; a remainder makes the file buffered.
      size_t head = 0;
      if (IsAligned(reinterpret_cast<uintptr_t>(data.data())) && IsAligned(offset_)) {
        head = data.size() / kDirectIoAlignment * kDirectIoAlignment;
      }
      if (head > 0) {
        absl::Status status = WriteAll(data.substr(0, head));
        if (status.ok()) {
          data.remove_prefix(head);
        } else if (!einval_) {
          return status;
        }  // else refused as direct I/O (now off): all of it goes through the page cache
      }
      if (!data.empty() && direct_) {
        absl::Status stop = StopDirect();
        if (!stop.ok()) return stop;
      }
    }
    return WriteAll(data);
  }

  absl::Status Sync() override {
    if (::fsync(fd_) != 0) return ErrnoStatus("fsync", path_, errno);
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (fd_ < 0) return absl::OkStatus();
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return ErrnoStatus("close", path_, errno);
    return absl::OkStatus();
  }

  bool direct() const override { return direct_; }

 private:
  absl::Status StopDirect() {
    direct_ = false;
    int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0) {
      return ErrnoStatus("fcntl(clear O_DIRECT)", path_, errno);
    }
    return absl::OkStatus();
  }

  // Writes all of `data` at the current offset. Sets einval_ when a direct write was
  // refused with EINVAL before any byte of it was written (the caller falls back).
  absl::Status WriteAll(std::string_view data) {
    einval_ = false;
    bool first = true;
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        if (err == EINVAL && direct_ && first) {
          einval_ = true;
          absl::Status stop = StopDirect();
          if (!stop.ok()) return stop;
        }
        return ErrnoStatus("write", path_, err);
      }
      first = false;
      data.remove_prefix(static_cast<size_t>(n));
      offset_ += static_cast<uint64_t>(n);
      // A short direct write leaves an unaligned offset; the rest goes buffered.
      if (direct_ && !IsAligned(offset_) && !data.empty()) {
        absl::Status stop = StopDirect();
        if (!stop.ok()) return stop;
      }
    }
    return absl::OkStatus();
  }

  std::string path_;
  int fd_;
  bool direct_;
  bool einval_ = false;
  uint64_t offset_ = 0;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd, uint64_t size, bool direct)
      : RandomAccessFile(std::move(path)), fd_(fd), size_(size), direct_(direct) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }

  absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* dst) const override {
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, dst + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("read", path(), errno);
      }
      if (r == 0) break;
      done += static_cast<size_t>(r);
      // O_DIRECT reads past EOF return short counts that are not block multiples; stop.
      if (direct_ && done % kDirectIoAlignment != 0) break;
    }
    return done;
  }
  uint64_t Size() const override { return size_; }
  int fd() const override { return fd_; }
  bool direct() const override { return direct_; }

 private:
  int fd_;
  uint64_t size_;
  bool direct_;
};

class PosixEnv final : public Env {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path, const OpenOptions& options) override {
    constexpr int kFlags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
    if (options.direct_io) {
      int fd = ::open(path.c_str(), kFlags | O_DIRECT, 0644);
      if (fd >= 0) return std::make_unique<PosixWritableFile>(path, fd, /*direct=*/true);
      // tmpfs and some FUSE filesystems refuse O_DIRECT with EINVAL: write buffered.
      if (errno != EINVAL) return ErrnoStatus("create", path, errno);
    }
    int fd = ::open(path.c_str(), kFlags, 0644);
    if (fd < 0) return ErrnoStatus("create", path, errno);
    return std::make_unique<PosixWritableFile>(path, fd, /*direct=*/false);
  }

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path, const OpenOptions& options) override {
    int fd = -1;
    bool direct = false;
    if (options.direct_io) {
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
      if (fd >= 0) {
        direct = true;
      } else if (errno != EINVAL) {
        return ErrnoStatus("open", path, errno);
      }
    }
    if (fd < 0) {
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return ErrnoStatus("open", path, errno);
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      return ErrnoStatus("stat", path, err);
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, " is a directory"));
    }
    return std::make_unique<PosixRandomAccessFile>(path, fd, static_cast<uint64_t>(st.st_size),
                                                   direct);
  }

  bool FileExists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }

  bool IsDirectory(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }

  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("stat", path, errno);
    return static_cast<uint64_t>(st.st_size);
  }

  absl::StatusOr<std::vector<std::string>> GetChildren(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return ErrnoStatus("opendir", dir, errno);
    std::vector<std::string> names;
    while (struct dirent* entry = ::readdir(d)) {
      std::string_view name = entry->d_name;
      if (name == "." || name == "..") continue;
      names.emplace_back(name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
  }

  absl::Status CreateDirs(const std::string& path) override {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) return ErrnoStatus("mkdir", path, ec.value());
    return absl::OkStatus();
  }

  absl::Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoStatus("unlink", path, errno);
    return absl::OkStatus();
  }

  absl::Status RemoveRecursively(const std::string& path) override {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec) return ErrnoStatus("remove", path, ec.value());
    return absl::OkStatus();
  }

  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus(absl::StrCat("rename ", from, " ->"), to, errno);
    }
    return absl::OkStatus();
  }

  absl::Status SyncDir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open", dir, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoStatus("fsync", dir, err);
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> GetFreeSpace(const std::string& path) override {
    struct statvfs st;
    if (::statvfs(path.c_str(), &st) != 0) return ErrnoStatus("statvfs", path, errno);
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  }

  uint64_t NowMicros() override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  void SleepForMicros(uint64_t micros) override {
    std::this_thread::sleep_for(std::chrono::microseconds(micros));
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();
  return env;
}

}  // namespace loadstar
