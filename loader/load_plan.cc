#include "loader/load_plan.h"

#include <algorithm>
#include <limits>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "loader/tensor_transform.h"

namespace loadstar::loader {
namespace {

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool Contains(const std::string& name, std::initializer_list<std::string_view> parts) {
  for (std::string_view p : parts) {
    if (name.find(p) != std::string::npos) return true;
  }
  return false;
}

bool IsEmbedding(const std::string& name) {
  return Contains(name, {"embed", "wte.", "wpe.", "word_embeddings", "position_embeddings",
                         "token_type_embeddings"});
}

// One unit of placement under kAuto: a transformer block or a group of non-layer tensors.
struct Unit {
  std::vector<int> tensors;  // indices into the per-tensor output arrays
  uint64_t bytes = 0;
};

// Packs `units` in order onto devices, each holding at most min(cap, limit[d]); returns
// the device of each unit, or nullopt when they do not fit on `n` devices.
std::optional<std::vector<int>> Pack(const std::vector<Unit>& units, int n,
                                     const std::vector<uint64_t>& limit, uint64_t cap) {
  std::vector<int> device(units.size());
  int d = 0;
  uint64_t used = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    while (d < n && used + units[i].bytes > std::min(cap, limit[d])) {
      if (used == 0 && units[i].bytes > limit[d]) {
        ++d;  // the unit can never fit this device; try the next one
        continue;
      }
      if (used == 0) break;  // over the balance cap but within the limit: alone is fine
      ++d;
      used = 0;
    }
    if (d == n) return std::nullopt;
    device[i] = d;
    used += units[i].bytes;
  }
  return device;
}

// Tensor-parallel role of a tensor, from its name (SPEC §5). Only layer parameters
// (`.weight`, `.bias`) of the projections and embeddings split; buffers (BERT's
// `embeddings.position_ids`), scalars and norms are replicated whatever their names say.
ShardKind TensorParallelKind(const std::string& name, const std::vector<int64_t>& shape) {
  const bool is_weight = name.ends_with(".weight");
  const bool is_bias = name.ends_with(".bias");
  if ((!is_weight && !is_bias) || shape.empty() ||
      Contains(name, {"norm", "Norm", "ln_", ".ln"})) {
    return ShardKind::kWhole;
  }
  if (IsEmbedding(name) || Contains(name, {"lm_head"})) {
    return is_weight && shape.size() == 2 ? ShardKind::kRows : ShardKind::kWhole;
  }
  if (Contains(name, {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "fc1",
                      "query", "key", "value", "intermediate.dense", "in_proj"})) {
    return ShardKind::kRows;
  }
  if (Contains(name, {"o_proj", "down_proj", "fc2", "dense", "out_proj"})) {
    // The bias of a row-parallel layer is added once, after the all-reduce: replicate.
    if (is_bias || shape.size() < 2) return ShardKind::kWhole;
    return ShardKind::kColumns;
  }
  return ShardKind::kWhole;
}

// True when layer-map key `prefix` covers tensor `name` (accelerate's module-name match:
// the key names a module, so it ends at a dot boundary or is the whole name).
bool Covers(const std::string& prefix, const std::string& name) {
  if (prefix.empty()) return true;
  if (!name.starts_with(prefix)) return false;
  return name.size() == prefix.size() || prefix.back() == '.' || name[prefix.size()] == '.';
}

}  // namespace

absl::StatusOr<Placement> ParsePlacement(const std::string& name) {
  if (name == "single" || name.empty()) return Placement::kSingle;
  if (name == "auto") return Placement::kAuto;
  if (name == "tensor_parallel") return Placement::kTensorParallel;
  if (name == "custom") return Placement::kCustom;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown placement '", name, "' (single | auto | tensor_parallel | custom)"));
}

store::ManifestTensor ShardTensor(const store::ManifestTensor& tensor, ShardKind kind,
                                  int num_shards) {
  store::ManifestTensor shard = tensor;
  if (kind == ShardKind::kWhole || num_shards <= 1) return shard;
  shard.shape[kind == ShardKind::kRows ? 0 : 1] /= num_shards;
  shard.size /= static_cast<uint64_t>(num_shards);
  return shard;
}

std::string LayerPrefix(const std::string& tensor_name) {
  std::vector<std::string_view> parts;
  std::string_view rest(tensor_name);
  for (size_t dot; (dot = rest.find('.')) != std::string_view::npos; rest.remove_prefix(dot + 1)) {
    parts.push_back(rest.substr(0, dot));
  }
  parts.push_back(rest);
  for (size_t i = 0; i + 2 < parts.size(); ++i) {
    std::string_view p = parts[i];
    if ((p == "layers" || p == "h" || p == "layer" || p == "blocks" || p == "block") &&
        AllDigits(parts[i + 1])) {
      size_t len = 0;
      for (size_t j = 0; j <= i + 1; ++j) len += parts[j].size() + 1;
      return tensor_name.substr(0, len);
    }
  }
  return "";
}

absl::StatusOr<LoadPlan> MakeLoadPlan(const store::Manifest& manifest, int num_devices,
                                      const PlanOptions& options) {
  if (num_devices < 1) return absl::InvalidArgumentError("a load plan needs a device");
  if (options.alignment < 256 || (options.alignment & (options.alignment - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("alignment ", options.alignment, " is not a power of two >= 256"));
  }
  if (!options.max_memory.empty() &&
      options.max_memory.size() != static_cast<size_t>(num_devices)) {
    return absl::InvalidArgumentError(absl::StrCat("max_memory lists ",
                                                   options.max_memory.size(),
                                                   " devices; the load has ", num_devices));
  }
  if (options.placement == Placement::kCustom) {
    if (options.layer_map.empty()) {
      return absl::InvalidArgumentError("backend_config.device_map: the layer map is empty");
    }
    for (const auto& [prefix, device] : options.layer_map) {
      if (device < 0 || device >= num_devices) {
        return absl::InvalidArgumentError(absl::StrCat(
            "backend_config.device_map.", prefix, ": GPU ", device, " is beyond the load's ",
            num_devices, " devices"));
      }
    }
  }
  std::vector<uint64_t> limit = options.max_memory;
  if (limit.empty()) limit.assign(num_devices, std::numeric_limits<uint64_t>::max());
  const uint64_t align = options.alignment;

  LoadPlan plan;
  plan.num_devices = num_devices;
  plan.device_bytes.assign(num_devices, 0);

  // 1. Output tensors (transformed and/or sharded), not yet placed.
  // The output of `t` (a tensor or one shard of one) after the transform, if any.
  auto output_of = [&](const store::ManifestTensor& t, int source) {
    PlannedTensor out;
    out.source = source;
    out.name = t.name;
    out.dtype = t.dtype;
    out.shape = t.shape;
    out.size = t.size;
    if (options.transform != nullptr) {
      if (std::optional<TransformedTensor> tt = options.transform->Plan(t)) {
        out.transformed = true;
        out.dtype = tt->dtype;
        out.shape = tt->shape;
        out.size = tt->size;
        out.transform_info = tt->info;
      }
    }
    return out;
  };
  for (size_t i = 0; i < manifest.tensors.size(); ++i) {
    const store::ManifestTensor& t = manifest.tensors[i];
    plan.source_bytes += t.size;
    if (options.placement != Placement::kTensorParallel || num_devices == 1) {
      plan.tensors.push_back(output_of(t, static_cast<int>(i)));
      continue;
    }
    ShardKind kind = TensorParallelKind(t.name, t.shape);
    int dim = kind == ShardKind::kRows ? 0 : 1;
    if (kind != ShardKind::kWhole && t.shape[dim] % num_devices != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor_parallel: ", t.name, " dim ", dim, " (", t.shape[dim],
          ") does not divide into ", num_devices, " shards"));
    }
    // Every shard has the same shape, so one plan serves them all; a transform
    // (quantization) sees the shard as a tensor of its own.
    PlannedTensor out = output_of(ShardTensor(t, kind, num_devices), static_cast<int>(i));
    for (int d = 0; d < num_devices; ++d) {
      PlannedTensor shard = out;
      shard.device = d;
      shard.shard_kind = kind;
      shard.shard = d;
      shard.num_shards = num_devices;
      plan.tensors.push_back(std::move(shard));
    }
  }

  // 2. Devices.
  if (options.placement == Placement::kCustom) {
    for (PlannedTensor& t : plan.tensors) {
      size_t best = 0;
      int device = -1;
      for (const auto& [prefix, d] : options.layer_map) {
        if (Covers(prefix, t.name) && (device < 0 || prefix.size() > best)) {
          best = prefix.size();
          device = d;
        }
      }
      if (device < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "backend_config.device_map: tensor '", t.name,
            "' is covered by no prefix of the map; add its module (or a parent) to it"));
      }
      t.device = device;
    }
  }
  if (options.placement == Placement::kAuto && num_devices > 1) {
    // Units in order: embeddings, blocks in first-appearance order, then the rest.
    Unit head, tail;
    std::vector<Unit> blocks;
    absl::flat_hash_map<std::string, size_t> block_index;
    for (size_t i = 0; i < plan.tensors.size(); ++i) {
      const PlannedTensor& t = plan.tensors[i];
      uint64_t bytes = AlignUp(t.size, align);
      std::string prefix = LayerPrefix(t.name);
      Unit* unit;
      if (!prefix.empty()) {
        auto [it, inserted] = block_index.try_emplace(prefix, blocks.size());
        if (inserted) blocks.emplace_back();
        unit = &blocks[it->second];
      } else {
        unit = IsEmbedding(t.name) ? &head : &tail;
      }
      unit->tensors.push_back(static_cast<int>(i));
      unit->bytes += bytes;
    }
    std::vector<Unit> units;
    if (!head.tensors.empty()) units.push_back(std::move(head));
    for (Unit& b : blocks) units.push_back(std::move(b));
    if (!tail.tensors.empty()) units.push_back(std::move(tail));
    uint64_t total = 0, biggest = 0;
    for (const Unit& u : units) {
      total += u.bytes;
      biggest = std::max(biggest, u.bytes);
    }
    // Smallest per-device cap that still fits: binary search on the balance bound.
    if (!Pack(units, num_devices, limit, std::numeric_limits<uint64_t>::max())) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "backend_config.max_memory: the model needs ", total,
          " bytes in whole blocks; they do not fit on ", num_devices,
          " devices within their caps"));
    }
    std::optional<std::vector<int>> device;
    if (!options.max_memory.empty()) {
      // With max_memory: fill each device in order up to its cap (as accelerate does).
      device = Pack(units, num_devices, limit, std::numeric_limits<uint64_t>::max());
    } else {
      uint64_t lo = std::max(biggest, (total + num_devices - 1) / num_devices);
      uint64_t hi = total;
      while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (Pack(units, num_devices, limit, mid)) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      device = Pack(units, num_devices, limit, lo);
      if (!device) device = Pack(units, num_devices, limit, std::numeric_limits<uint64_t>::max());
    }
    for (size_t u = 0; u < units.size(); ++u) {
      for (int i : units[u].tensors) plan.tensors[i].device = (*device)[u];
    }
  }

  // 3. Offsets, in manifest order per device (so reads walk each file forwards).
  std::vector<uint64_t> cursor(num_devices, 0);
  for (PlannedTensor& t : plan.tensors) {
    t.offset = AlignUp(cursor[t.device], align);
    cursor[t.device] = t.offset + t.size;
  }
  for (int d = 0; d < num_devices; ++d) {
    plan.device_bytes[d] = AlignUp(cursor[d], 4096);
    if (plan.device_bytes[d] > limit[d]) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "backend_config.max_memory.", d, ": the plan puts ", plan.device_bytes[d],
          " bytes on GPU ", d, "; its cap is ", limit[d]));
    }
  }
  return plan;
}

}  // namespace loadstar::loader
