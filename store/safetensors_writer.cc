#include "store/safetensors_writer.h"

#include <unistd.h>

#include <atomic>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "store/model_writer.h"

namespace loadstar::store {
namespace {

absl::Status CheckSpecs(const std::vector<TensorInput>& tensors) {
  std::set<std::string_view> names;
  for (const TensorInput& tensor : tensors) {
    const std::string& name = tensor.spec.name;
    if (name.empty() || name == "__metadata__") {
      return absl::InvalidArgumentError(
          fmt::format("invalid safetensors tensor name \"{}\"", name));
    }
    if (!names.insert(name).second) {
      return absl::InvalidArgumentError(fmt::format("tensor \"{}\" appears twice", name));
    }
    if (tensor.shape_at_write) {
      return absl::InvalidArgumentError(fmt::format(
          "tensor \"{}\": its size is known only while writing; a safetensors header needs "
          "every size first",
          name));
    }
    std::optional<uint64_t> size = TensorByteSize(tensor.spec.dtype, tensor.spec.shape);
    if (!size) {
      return absl::InvalidArgumentError(fmt::format(
          "tensor \"{}\": invalid shape {}", name, ShapeToString(tensor.spec.shape)));
    }
    if (*size > 0 && !tensor.fill) {
      return absl::InvalidArgumentError(fmt::format("tensor \"{}\" has no filler", name));
    }
  }
  return absl::OkStatus();
}

// 8-byte length prefix + header padded with spaces so 8 + N is a multiple of 8.
std::string HeaderBlock(const std::vector<TensorInput>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  for (const TensorInput& tensor : tensors) specs.push_back(tensor.spec);
  std::string header = SafetensorsHeaderJson(specs, metadata);
  header.resize((header.size() + 7) / 8 * 8, ' ');
  std::string block(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) block[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return block + header;
}

// Streams every tensor's bytes to `sink` in pieces of at most kCopyBufferBytes.
template <typename Sink>
absl::Status StreamTensors(std::vector<TensorInput>& tensors, Sink sink) {
  std::unique_ptr<char[]> buffer;
  for (TensorInput& tensor : tensors) {
    uint64_t size = *TensorByteSize(tensor.spec.dtype, tensor.spec.shape);
    if (size > 0 && buffer == nullptr) buffer = std::make_unique<char[]>(kCopyBufferBytes);
    for (uint64_t pos = 0; pos < size;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kCopyBufferBytes, size - pos));
      RETURN_IF_ERROR(tensor.fill(pos, buffer.get(), n));
      RETURN_IF_ERROR(sink(std::string_view(buffer.get(), n)));
      pos += n;
    }
    tensor.fill = nullptr;
  }
  return absl::OkStatus();
}

}  // namespace

std::string SafetensorsHeaderJson(const std::vector<TensorSpec>& specs,
                                  const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the header in file order, like the reference writer's output.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorSpec& spec : specs) {
    uint64_t size = TensorByteSize(spec.dtype, spec.shape).value_or(0);
    header[spec.name] = {{"dtype", std::string(DTypeName(spec.dtype))},
                         {"shape", spec.shape},
                         {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  return header.dump();
}

absl::Status WriteSafetensors(Env* env, const std::string& path,
                              std::vector<TensorInput> tensors,
                              const std::map<std::string, std::string>& metadata) {
  RETURN_IF_ERROR(CheckSpecs(tensors));
  static std::atomic<uint64_t> counter{0};
  std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter.fetch_add(1));
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(tmp));
    RETURN_IF_ERROR(file->Append(HeaderBlock(tensors, metadata)));
    RETURN_IF_ERROR(StreamTensors(tensors, [&](std::string_view data) {
      return file->Append(data);
    }));
    RETURN_IF_ERROR(file->Sync());
    RETURN_IF_ERROR(file->Close());
    RETURN_IF_ERROR(env->RenameFile(tmp, path));
    return env->SyncDir(DirName(path));
  }();
  if (!status.ok()) env->RemoveFile(tmp).IgnoreError();
  return status;
}

absl::StatusOr<std::string> SerializeSafetensors(
    std::vector<TensorInput> tensors, const std::map<std::string, std::string>& metadata) {
  RETURN_IF_ERROR(CheckSpecs(tensors));
  std::string out = HeaderBlock(tensors, metadata);
  RETURN_IF_ERROR(StreamTensors(tensors, [&](std::string_view data) {
    out.append(data);
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace loadstar::store
