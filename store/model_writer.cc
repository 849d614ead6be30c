#include "store/model_writer.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "store/checksum.h"

namespace loadstar::store {
namespace {

uint64_t AlignUp(uint64_t value) {
  return (value + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
}

// The write-behind thread of WriteModelDir: the caller fills aligned blocks and submits
// them in file order; the thread appends each to its file and returns the block to the
// free list. The first error stops the writes; the caller sees it at its next Acquire or
// Drain.
class WriteBehind {
 public:
  WriteBehind(size_t buffers, size_t bytes) : bytes_(bytes) {
    for (size_t i = 0; i < buffers; ++i) {
      storage_.emplace_back(static_cast<char*>(
          ::operator new[](bytes, std::align_val_t(kDirectIoAlignment))));
      free_.push_back(storage_.back().get());
    }
    thread_ = std::thread([this] { Loop(); });
  }
  ~WriteBehind() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  size_t block_bytes() const { return bytes_; }

  // A free block (waits for the writer to finish one), or the writer's error.
  absl::StatusOr<char*> Acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !free_.empty() || !error_.ok(); });
    if (!error_.ok()) return error_;
    char* block = free_.back();
    free_.pop_back();
    return block;
  }

  // Queues block[0, n) to be appended to `file` (n == 0 just returns the block).
  void Submit(WritableFile* file, char* block, size_t n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back({file, block, n});
    }
    cv_.notify_all();
  }

  // Waits until every queued block was written; the first error if any was not.
  absl::Status Drain() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return (queue_.empty() && !busy_) || !error_.ok(); });
    return error_;
  }

 private:
  struct Job {
    WritableFile* file;
    char* block;
    size_t n;
  };
  struct AlignedDelete {
    void operator()(char* p) const {
      ::operator delete[](p, std::align_val_t(kDirectIoAlignment));
    }
  };

  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ with nothing left
      Job job = queue_.front();
      queue_.pop_front();
      busy_ = true;
      bool failed = !error_.ok();
      lock.unlock();
      absl::Status status;
      if (!failed && job.n > 0) status = job.file->Append(std::string_view(job.block, job.n));
      lock.lock();
      busy_ = false;
      if (!status.ok() && error_.ok()) error_ = status;
      free_.push_back(job.block);
      cv_.notify_all();
    }
  }

  const size_t bytes_;
  std::vector<std::unique_ptr<char[], AlignedDelete>> storage_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<char*> free_;
  std::deque<Job> queue_;
  bool busy_ = false;
  bool stop_ = false;
  absl::Status error_;
  std::thread thread_;
};

// Appends to one data file through the blocks of a WriteBehind, tracking the offset.
class BlockWriter {
 public:
  BlockWriter(WritableFile* file, WriteBehind* behind) : file_(file), behind_(behind) {}
  ~BlockWriter() {
    if (block_ != nullptr) behind_->Submit(file_, block_, 0);  // give it back unwritten
  }

  uint64_t offset() const { return offset_; }

  // Space to write into directly; call Commit(n) after filling n bytes of it.
  absl::Status Reserve(char** dst, size_t* n) {
    if (block_ != nullptr && used_ == behind_->block_bytes()) SubmitBlock();
    if (block_ == nullptr) {
      ASSIGN_OR_RETURN(block_, behind_->Acquire());
      used_ = 0;
    }
    *dst = block_ + used_;
    *n = behind_->block_bytes() - used_;
    return absl::OkStatus();
  }
  void Commit(size_t n) {
    used_ += n;
    offset_ += n;
  }

  absl::Status PadTo(uint64_t target) {
    while (offset_ < target) {
      char* dst;
      size_t n;
      RETURN_IF_ERROR(Reserve(&dst, &n));
      n = static_cast<size_t>(std::min<uint64_t>(n, target - offset_));
      std::memset(dst, 0, n);
      Commit(n);
    }
    return absl::OkStatus();
  }

  // Submits what is buffered and waits until the whole file was appended.
  absl::Status Finish() {
    if (block_ != nullptr) SubmitBlock();
    return behind_->Drain();
  }

 private:
  void SubmitBlock() {
    behind_->Submit(file_, block_, used_);
    block_ = nullptr;
    used_ = 0;
  }

  WritableFile* file_;
  WriteBehind* behind_;
  char* block_ = nullptr;
  size_t used_ = 0;
  uint64_t offset_ = 0;
};

}  // namespace

std::string DataFileName(size_t index) { return fmt::format("data-{:05d}.bin", index); }

std::vector<std::vector<TensorInput>> GroupBySize(std::vector<TensorInput> tensors,
                                                  uint64_t max_file_bytes) {
  std::vector<std::vector<TensorInput>> groups;
  uint64_t group_bytes = 0;
  for (TensorInput& tensor : tensors) {
    uint64_t size = AlignUp(TensorByteSize(tensor.spec.dtype, tensor.spec.shape).value_or(0));
    if (groups.empty() || (group_bytes > 0 && group_bytes + size > max_file_bytes)) {
      groups.emplace_back();
      group_bytes = 0;
    }
    group_bytes += size;
    groups.back().push_back(std::move(tensor));
  }
  return groups;
}

absl::Status WriteFileDurably(Env* env, const std::string& path, std::string_view data) {
  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(path));
  RETURN_IF_ERROR(file->Append(data));
  RETURN_IF_ERROR(file->Sync());
  return file->Close();
}

absl::StatusOr<Manifest> WriteModelDir(Env* env, const std::string& dir,
                                       Manifest manifest,
                                       std::vector<std::vector<TensorInput>> groups,
                                       const ProgressCallback& progress) {
  // Validate every spec before writing a byte, and learn the total for progress.
  uint64_t total = 0;
  std::set<std::string_view> names;
  for (const auto& group : groups) {
    for (const TensorInput& tensor : group) {
      const TensorSpec& spec = tensor.spec;
      if (spec.name.empty()) return absl::InvalidArgumentError("tensor with an empty name");
      if (!names.insert(spec.name).second) {
        return absl::InvalidArgumentError(
            fmt::format("tensor \"{}\" appears twice", spec.name));
      }
      if (tensor.shape_at_write) {
        if (!tensor.fill) {
          return absl::InvalidArgumentError(
              fmt::format("tensor \"{}\" has no filler", spec.name));
        }
        continue;  // sized when the writer reaches it
      }
      std::optional<uint64_t> size = TensorByteSize(spec.dtype, spec.shape);
      if (!size) {
        return absl::InvalidArgumentError(fmt::format(
            "tensor \"{}\": invalid shape {}", spec.name, ShapeToString(spec.shape)));
      }
      if (!tensor.fill && *size > 0) {
        return absl::InvalidArgumentError(
            fmt::format("tensor \"{}\" has no filler", spec.name));
      }
      total += *size;
    }
  }

  manifest.files.clear();
  manifest.tensors.clear();
  uint64_t done = 0;
  ChunkHasher hasher;
  WriteBehind behind(kWriteBuffers, kWriteBlockBytes);
  for (auto& group : groups) {
    if (group.empty()) continue;
    uint32_t file_index = static_cast<uint32_t>(manifest.files.size());
    std::string file_name = DataFileName(file_index);
    std::string path = JoinPath(dir, file_name);
    ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                     env->NewWritableFile(path, {.direct_io = true}));
    absl::Status written = [&]() -> absl::Status {
      BlockWriter writer(file.get(), &behind);
      for (TensorInput& tensor : group) {
        ManifestTensor entry;
        entry.name = tensor.spec.name;
        entry.dtype = tensor.spec.dtype;
        entry.shape = tensor.spec.shape;
        entry.file = file_index;
        if (tensor.shape_at_write) {
          ASSIGN_OR_RETURN(entry.shape, tensor.shape_at_write());
          std::optional<uint64_t> size = TensorByteSize(entry.dtype, entry.shape);
          if (!size) {
            return absl::InvalidArgumentError(fmt::format(
                "tensor \"{}\": invalid shape {}", entry.name, ShapeToString(entry.shape)));
          }
          total += *size;
        }
        entry.size = *TensorByteSize(entry.dtype, entry.shape);
        RETURN_IF_ERROR(writer.PadTo(AlignUp(writer.offset())));
        entry.offset = writer.offset();
        uint64_t written = 0;
        while (written < entry.size) {
          char* dst;
          size_t n;
          RETURN_IF_ERROR(writer.Reserve(&dst, &n));
          n = static_cast<size_t>(std::min<uint64_t>(n, entry.size - written));
          absl::Status status = tensor.fill(written, dst, n);
          if (!status.ok()) return status;
          hasher.Update(std::string_view(dst, n));
          writer.Commit(n);
          written += n;
          done += n;
          if (progress) progress(done, total, entry.name);
        }
        entry.checksums = hasher.Finish();
        // Drop the filler now: it may hold a source file or a big buffer.
        tensor.fill = nullptr;
        tensor.shape_at_write = nullptr;
        manifest.tensors.push_back(std::move(entry));
      }
      return writer.Finish();
    }();
    if (!written.ok()) {
      // Let the write-behind thread finish with `file` before it is closed.
      behind.Drain().IgnoreError();
      return written;
    }
    RETURN_IF_ERROR(file->Sync());
    RETURN_IF_ERROR(file->Close());
    manifest.files.push_back(file_name);
  }
  RETURN_IF_ERROR(
      WriteFileDurably(env, JoinPath(dir, "manifest.json"), SerializeManifest(manifest)));
  RETURN_IF_ERROR(env->SyncDir(dir));
  // Zero-byte models report nothing in the loop; still tell the caller they are done.
  if (progress && total == 0) progress(0, 0, "");
  return manifest;
}

}  // namespace loadstar::store
