#include "store/hf_checkpoint.h"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "store/json_util.h"
#include "store/names.h"

namespace loadstar::store {
namespace {

// The index is small JSON; refuse absurd sizes rather than read them.
constexpr uint64_t kMaxIndexBytes = 64ull << 20;

// Reads model.safetensors.index.json: tensor name -> shard file name.
absl::StatusOr<std::map<std::string, std::string>> ReadWeightMap(Env* env,
                                                                 const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(env, path, kMaxIndexBytes));
  ASSIGN_OR_RETURN(nlohmann::json index, ParseJsonStrict(text, path));
  if (!index.is_object() || !index.contains("weight_map") ||
      !index.at("weight_map").is_object()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: expected an object with a \"weight_map\" object", path));
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, shard] : index.at("weight_map").items()) {
    // Shard names come from a file we do not trust: keep them inside the directory.
    if (!shard.is_string() || !IsPlainFileName(shard.get<std::string>())) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tensor \"{}\": shard {} is not a plain file name", path, tensor, JsonSnippet(shard)));
    }
    weight_map[tensor] = shard.get<std::string>();
  }
  if (weight_map.empty()) {
    return absl::InvalidArgumentError(fmt::format("{}: weight_map is empty", path));
  }
  return weight_map;
}

absl::Status CheckShardsAgainstIndex(const HfCheckpoint& checkpoint,
                                     const std::map<std::string, std::string>& weight_map,
                                     const std::string& index_path) {
  std::map<std::string, std::string> found;  // tensor -> shard that holds it
  for (const SafetensorsFile& shard : checkpoint.shards) {
    std::string shard_name = shard.path.substr(shard.path.rfind('/') + 1);
    for (const SafetensorsTensor& tensor : shard.tensors) {
      auto [it, inserted] = found.emplace(tensor.name, shard_name);
      if (!inserted) {
        return absl::InvalidArgumentError(
            fmt::format("{}: tensor \"{}\" appears in two shards, {} and {}", checkpoint.dir,
                        tensor.name, it->second, shard_name));
      }
      auto listed = weight_map.find(tensor.name);
      if (listed == weight_map.end()) {
        return absl::InvalidArgumentError(
            fmt::format("{}: tensor \"{}\" is in shard {} but not in {}", checkpoint.dir,
                        tensor.name, shard_name, index_path));
      }
      if (listed->second != shard_name) {
        return absl::InvalidArgumentError(
            fmt::format("{}: tensor \"{}\" is in shard {} but {} puts it in {}",
                        checkpoint.dir, tensor.name, shard_name, index_path, listed->second));
      }
    }
  }
  for (const auto& [tensor, shard] : weight_map) {
    if (!found.contains(tensor)) {
      return absl::InvalidArgumentError(
          fmt::format("{}: tensor \"{}\" is listed in {} but missing from shard {}",
                      checkpoint.dir, tensor, index_path, shard));
    }
  }
  return absl::OkStatus();
}

// Weight files in any format a Hugging Face repository may carry, and their indexes: the
// store holds weights as tensors, never as opaque files.
bool IsWeightFile(std::string_view name) {
  static constexpr std::string_view kWeightSuffixes[] = {
      ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx",
      ".onnx_data", ".gguf", ".tflite", ".ot", ".npz", ".pb", ".index.json"};
  for (std::string_view suffix : kWeightSuffixes) {
    if (name.ends_with(suffix)) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListKeptFiles(Env* env, const std::string& dir) {
  std::vector<std::string> kept;
  uint64_t total = 0, largest = 0;
  std::string largest_name;
  // Adds the files of `sub` ("" for `dir` itself); descends one level from the top.
  auto scan = [&](const std::string& sub, auto& self) -> absl::Status {
    std::string path = sub.empty() ? dir : JoinPath(dir, sub);
    ASSIGN_OR_RETURN(std::vector<std::string> children, env->GetChildren(path));
    for (const std::string& child : children) {
      if (!IsPlainFileName(child)) continue;
      std::string rel = sub.empty() ? child : sub + "/" + child;
      std::string full = JoinPath(dir, rel);
      if (env->IsDirectory(full)) {
        if (sub.empty()) RETURN_IF_ERROR(self(child, self));
        continue;
      }
      if (IsWeightFile(child)) continue;
      ASSIGN_OR_RETURN(uint64_t size, env->GetFileSize(full));
      total += size;
      if (size >= largest) largest = size, largest_name = rel;
      kept.push_back(rel);
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(scan("", scan));
  if (total > kMaxKeptFileBytes) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: the non-weight files come to {} bytes, more than the {} MiB the store keeps "
        "(largest: {}, {} bytes); remove what a consumer does not need",
        dir, total, kMaxKeptFileBytes >> 20, largest_name, largest));
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}

size_t HfCheckpoint::TensorCount() const {
  size_t count = 0;
  for (const SafetensorsFile& shard : shards) count += shard.tensors.size();
  return count;
}

uint64_t HfCheckpoint::TotalBytes() const {
  uint64_t total = 0;
  for (const SafetensorsFile& shard : shards) total += shard.file_size - shard.data_offset;
  return total;
}

absl::StatusOr<HfCheckpoint> OpenHfCheckpoint(Env* env, const std::string& dir) {
  if (!env->IsDirectory(dir)) {
    return absl::NotFoundError(fmt::format("{}: not a directory", dir));
  }
  HfCheckpoint checkpoint;
  checkpoint.dir = dir;
  if (!env->FileExists(JoinPath(dir, "config.json"))) {
    return absl::InvalidArgumentError(
        fmt::format("{}: no config.json (not a Hugging Face model directory)", dir));
  }
  ASSIGN_OR_RETURN(checkpoint.extra_files, ListKeptFiles(env, dir));

  std::string index_path = JoinPath(dir, kIndexFileName);
  if (env->FileExists(index_path)) {
    ASSIGN_OR_RETURN(auto weight_map, ReadWeightMap(env, index_path));
    std::set<std::string> shard_names;
    for (const auto& [tensor, shard] : weight_map) shard_names.insert(shard);
    for (const std::string& shard : shard_names) {
      std::string path = JoinPath(dir, shard);
      if (!env->FileExists(path)) {
        return absl::InvalidArgumentError(
            fmt::format("{}: shard {} named in {} does not exist", dir, shard, kIndexFileName));
      }
      ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(env, path));
      checkpoint.shards.push_back(std::move(file));
    }
    RETURN_IF_ERROR(CheckShardsAgainstIndex(checkpoint, weight_map, kIndexFileName));
    return checkpoint;
  }

  std::string single = JoinPath(dir, kSingleFileName);
  if (!env->FileExists(single)) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: no {} and no {} (only safetensors checkpoints are supported)", dir,
        kSingleFileName, kIndexFileName));
  }
  ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(env, single));
  checkpoint.shards.push_back(std::move(file));
  return checkpoint;
}

}  // namespace loadstar::store
