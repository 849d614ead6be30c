#include "store/model_writer.h"

#include <cstring>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "store/checksum.h"

namespace loadstar::store {
namespace {

uint64_t AlignUp(uint64_t value) {
  return (value + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
}

// Appends to a WritableFile through one big buffer, tracking the file offset.
class BufferedWriter {
 public:
  BufferedWriter(WritableFile* file, char* buffer, size_t capacity)
      : file_(file), buffer_(buffer), capacity_(capacity) {}

  uint64_t offset() const { return offset_; }

  // Space to write into directly; call Commit(n) after filling n bytes of it.
  absl::Status Reserve(char** dst, size_t* n) {
    if (used_ == capacity_) RETURN_IF_ERROR(Flush());
    *dst = buffer_ + used_;
    *n = capacity_ - used_;
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

  absl::Status Flush() {
    if (used_ > 0) RETURN_IF_ERROR(file_->Append(std::string_view(buffer_, used_)));
    used_ = 0;
    return absl::OkStatus();
  }

 private:
  WritableFile* file_;
  char* buffer_;
  size_t capacity_;
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
  auto buffer = std::make_unique<char[]>(kCopyBufferBytes);
  uint64_t done = 0;
  ChunkHasher hasher;
  for (auto& group : groups) {
    if (group.empty()) continue;
    uint32_t file_index = static_cast<uint32_t>(manifest.files.size());
    std::string file_name = DataFileName(file_index);
    std::string path = JoinPath(dir, file_name);
    ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(path));
    BufferedWriter writer(file.get(), buffer.get(), kCopyBufferBytes);
    for (TensorInput& tensor : group) {
      ManifestTensor entry;
      entry.name = tensor.spec.name;
      entry.dtype = tensor.spec.dtype;
      entry.shape = tensor.spec.shape;
      entry.file = file_index;
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
      manifest.tensors.push_back(std::move(entry));
    }
    RETURN_IF_ERROR(writer.Flush());
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
