// An Env that fails on demand, for testing what a caller leaves behind when the disk
// fills up, fsync fails or rename fails (LevelDB's fault-injection style).
//
//   loadstar::testing::FaultEnv env(Env::Default());
//   env.SetWriteLimit(1 << 20);           // writes past 1 MiB total fail with ENOSPC
//   env.FailSyncMatching("data-00001");   // fsync of files whose path contains this fails
//   env.FailRenameMatching("/.tmp/");     // renames from such paths fail
//
// Failures are errors of the same canonical codes PosixEnv returns (ResourceExhausted for
// ENOSPC, Internal for EIO). Counters tell what was attempted.
//
// Thread safety: safe to use from several threads (settings are atomic or locked).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "base/env.h"

namespace loadstar::testing {

class FaultEnv : public EnvWrapper {
 public:
  explicit FaultEnv(Env* target) : EnvWrapper(target) {}

  // Total bytes all files opened through this Env may still append; an Append that
  // would exceed it writes what fits and fails with "No space left on device".
  // Negative: unlimited (the default).
  void SetWriteLimit(int64_t bytes) { write_budget_ = bytes; }
  // Fail WritableFile::Sync on paths containing `substring` ("" = every file).
  void FailSyncMatching(std::string substring) { Set(sync_pattern_, std::move(substring)); }
  // Fail SyncDir on directories containing `substring`.
  void FailSyncDirMatching(std::string substring) { Set(sync_dir_pattern_, std::move(substring)); }
  // Fail RenameFile when the source path contains `substring`.
  void FailRenameMatching(std::string substring) { Set(rename_pattern_, std::move(substring)); }
  // Fail NewWritableFile on paths containing `substring`.
  void FailCreateMatching(std::string substring) { Set(create_pattern_, std::move(substring)); }
  // Clears every injected failure.
  void Reset() {
    write_budget_ = -1;
    Set(sync_pattern_, std::nullopt);
    Set(sync_dir_pattern_, std::nullopt);
    Set(rename_pattern_, std::nullopt);
    Set(create_pattern_, std::nullopt);
  }

  int64_t bytes_written() const { return bytes_written_; }
  int renames() const { return renames_; }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path, const OpenOptions& options = {}) override {
    if (Matches(create_pattern_, path)) {
      return absl::PermissionDeniedError("injected: create " + path + ": Permission denied");
    }
    auto file = target()->NewWritableFile(path, options);
    if (!file.ok()) return file.status();
    return std::unique_ptr<WritableFile>(new File(this, path, std::move(file).value()));
  }

  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    ++renames_;
    if (Matches(rename_pattern_, from)) {
      return absl::InternalError("injected: rename " + from + " -> " + to +
                                 ": Input/output error");
    }
    return target()->RenameFile(from, to);
  }

  absl::Status SyncDir(const std::string& dir) override {
    if (Matches(sync_dir_pattern_, dir)) {
      return absl::InternalError("injected: fsync " + dir + ": Input/output error");
    }
    return target()->SyncDir(dir);
  }

 private:
  class File : public WritableFile {
   public:
    File(FaultEnv* env, std::string path, std::unique_ptr<WritableFile> base)
        : env_(env), path_(std::move(path)), base_(std::move(base)) {}

    absl::Status Append(std::string_view data) override {
      int64_t budget = env_->write_budget_.load();
      if (budget >= 0) {
        // Claim what fits; the rest of the write fails like a full disk.
        int64_t take = std::min<int64_t>(budget, static_cast<int64_t>(data.size()));
        env_->write_budget_ -= take;
        if (take > 0) {
          absl::Status status = base_->Append(data.substr(0, static_cast<size_t>(take)));
          if (!status.ok()) return status;
          env_->bytes_written_ += take;
        }
        if (static_cast<size_t>(take) < data.size()) {
          return absl::ResourceExhaustedError("injected: write " + path_ +
                                              ": No space left on device");
        }
        return absl::OkStatus();
      }
      env_->bytes_written_ += static_cast<int64_t>(data.size());
      return base_->Append(data);
    }
    absl::Status Sync() override {
      if (env_->Matches(env_->sync_pattern_, path_)) {
        return absl::InternalError("injected: fsync " + path_ + ": Input/output error");
      }
      return base_->Sync();
    }
    absl::Status Close() override { return base_->Close(); }
    bool direct() const override { return base_->direct(); }

   private:
    FaultEnv* env_;
    std::string path_;
    std::unique_ptr<WritableFile> base_;
  };

  void Set(std::optional<std::string>& pattern, std::optional<std::string> value) {
    std::lock_guard<std::mutex> lock(mu_);
    pattern = std::move(value);
  }
  bool Matches(const std::optional<std::string>& pattern, const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    return pattern.has_value() && path.find(*pattern) != std::string::npos;
  }

  std::atomic<int64_t> write_budget_{-1};
  std::atomic<int64_t> bytes_written_{0};
  std::atomic<int> renames_{0};
  std::mutex mu_;
  std::optional<std::string> sync_pattern_;
  std::optional<std::string> sync_dir_pattern_;
  std::optional<std::string> rename_pattern_;
  std::optional<std::string> create_pattern_;
};

}  // namespace loadstar::testing
