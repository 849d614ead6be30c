#include "store/gptq_checkpoint.h"

#include <map>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/status_macros.h"
#include "quant/gptq_awq.h"
#include "store/json_util.h"
#include "store/tensor.h"

namespace loadstar::store {
namespace {

constexpr uint64_t kMaxConfigBytes = 16ull << 20;

struct Located {
  const SafetensorsFile* file;
  const SafetensorsTensor* tensor;
};

}  // namespace

absl::StatusOr<std::optional<GptqConfig>> ReadGptqConfig(Env* env, const std::string& dir) {
  for (const char* name : {"config.json", "quantize_config.json"}) {
    const std::string path = JoinPath(dir, name);
    if (!env->FileExists(path)) continue;
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(env, path, kMaxConfigBytes));
    nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!root.is_object()) continue;
    const bool nested = root.contains("quantization_config");
    const nlohmann::json& q = nested ? root["quantization_config"] : root;
    const std::string prefix = nested ? "quantization_config." : "";
    if (!q.is_object()) continue;
    std::string method;
    if (q.contains("quant_method") && q["quant_method"].is_string()) {
      method = q["quant_method"].get<std::string>();
    } else if (std::string_view(name) == "quantize_config.json" && q.contains("bits")) {
      method = "gptq";  // AutoGPTQ's file has no quant_method
    }
    if (method != "gptq" && method != "awq") continue;
    auto bad = [&](const std::string& key, const std::string& what) {
      return absl::InvalidArgumentError(fmt::format("{}: {}{}: {}", path, prefix, key, what));
    };
    GptqConfig c;
    c.method = method;
    c.source = path;
    if (!q.contains("bits") || !q["bits"].is_number_integer()) return bad("bits", "missing");
    c.bits = q["bits"].get<int>();
    if (method == "gptq" && c.bits != 2 && c.bits != 3 && c.bits != 4 && c.bits != 8) {
      return bad("bits", fmt::format("{} is not supported (2, 3, 4 or 8)", c.bits));
    }
    if (method == "awq" && c.bits != 4) {
      return bad("bits", fmt::format("{} is not supported for awq (4)", c.bits));
    }
    if (q.contains("group_size")) {
      if (!q["group_size"].is_number_integer()) return bad("group_size", "must be an integer");
      c.group_size = q["group_size"].get<int64_t>();
      if (c.group_size == 0 || c.group_size < -1) {
        return bad("group_size", fmt::format("{} is neither -1 nor positive", c.group_size));
      }
    }
    if (method == "gptq") {
      if (q.contains("desc_act") && q["desc_act"].is_boolean()) c.desc_act = q["desc_act"].get<bool>();
      std::string format = q.value("checkpoint_format", std::string("gptq"));
      if (format != "gptq" && format != "gptq_v2") {
        return bad("checkpoint_format",
                   fmt::format("\"{}\" is not supported (gptq or gptq_v2)", format));
      }
      c.v2 = format == "gptq_v2";
      if (q.contains("sym")) {
        if (!q["sym"].is_boolean()) return bad("sym", "must be true or false");
        c.sym = q["sym"].get<bool>();
      }
    } else {
      if (q.contains("zero_point") && !(q["zero_point"].is_boolean() && q["zero_point"].get<bool>())) {
        return bad("zero_point", "AWQ without zero points is not supported (the gemm layout "
                                 "stores qzeros)");
      }
      c.sym = false;
      std::string version = q.value("version", std::string("gemm"));
      for (char& ch : version) ch = static_cast<char>(std::tolower(ch));
      if (version != "gemm") {
        return bad("version", fmt::format("AWQ \"{}\" layouts are not supported (gemm)", version));
      }
      if (c.group_size == -1) return bad("group_size", "-1 is not an AWQ group size");
    }
    return std::optional<GptqConfig>(c);
  }
  return std::optional<GptqConfig>();
}

absl::StatusOr<PrequantInfo> MapGptqCheckpoint(Env* env, const HfCheckpoint& checkpoint,
                                               const GptqConfig& c) {
  std::map<std::string, Located> by_name;
  for (const SafetensorsFile& f : checkpoint.shards) {
    for (const SafetensorsTensor& t : f.tensors) by_name[t.name] = {&f, &t};
  }
  PrequantInfo info;
  info.format = c.method;
  for (const auto& entry : by_name) {
    const std::string& name = entry.first;  // (clang < 16: no structured binding captures)
    const Located& q = entry.second;
    if (!name.ends_with(".qweight")) continue;
    const std::string module = name.substr(0, name.size() - 8);
    const std::string file = q.file->path;
    auto bad = [&](const std::string& tensor, const std::string& what) {
      return absl::InvalidArgumentError(
          fmt::format("{}: tensor \"{}\": {} ({} {}-bit, group_size {})", file, tensor, what,
                      c.method, c.bits, c.group_size));
    };
    auto need = [&](const std::string& part) -> absl::StatusOr<Located> {
      auto it = by_name.find(module + "." + part);
      if (it == by_name.end()) {
        return bad(name, fmt::format("its {}.{} is missing", module, part));
      }
      return it->second;
    };
    ASSIGN_OR_RETURN(Located zeros, need("qzeros"));
    ASSIGN_OR_RETURN(Located scales, need("scales"));
    const std::vector<int64_t>& qs = q.tensor->shape;
    if (q.tensor->dtype != DType::kI32 || qs.size() != 2) {
      return bad(name, fmt::format("qweight must be a 2-D I32 tensor, not {} {}",
                                   DTypeName(q.tensor->dtype), ShapeToString(qs)));
    }
    if (zeros.tensor->dtype != DType::kI32 || zeros.tensor->shape.size() != 2) {
      return bad(module + ".qzeros", "qzeros must be a 2-D I32 tensor");
    }
    if (scales.tensor->dtype != DType::kF16 || scales.tensor->shape.size() != 2) {
      return bad(module + ".scales", fmt::format("scales must be a 2-D F16 tensor, not {} {}",
                                                 DTypeName(scales.tensor->dtype),
                                                 ShapeToString(scales.tensor->shape)));
    }
    PrequantLinear l;
    l.bits = c.bits;
    l.v2 = c.v2;
    const int64_t groups = scales.tensor->shape[0];
    if (c.method == "gptq") {
      if ((qs[0] * 32) % c.bits != 0) {
        return bad(name, fmt::format("qweight {} rows are not a whole number of {}-bit values",
                                     qs[0], c.bits));
      }
      l.in = qs[0] * 32 / c.bits;
      l.out = qs[1];
    } else {
      l.in = qs[0];
      l.out = qs[1] * 8;
    }
    l.group_size = c.group_size == -1 ? l.in : c.group_size;
    const int64_t want_groups = (l.in + l.group_size - 1) / l.group_size;
    if (scales.tensor->shape[1] != l.out || groups != want_groups) {
      return bad(module + ".scales",
                 fmt::format("scales {} do not match qweight {}: expected [{}, {}] for "
                             "in_features {} (qweight rows x 32 / bits) and out_features {}",
                             ShapeToString(scales.tensor->shape), ShapeToString(qs), want_groups,
                             l.out, l.in, l.out));
    }
    const int64_t zero_cols = c.method == "gptq" ? l.out * c.bits / 32 : l.out / 8;
    if ((c.method == "gptq" && (l.out * c.bits) % 32 != 0) ||
        zeros.tensor->shape != std::vector<int64_t>{groups, zero_cols}) {
      return bad(module + ".qzeros", fmt::format("qzeros {} should be [{}, {}]",
                                                 ShapeToString(zeros.tensor->shape), groups,
                                                 zero_cols));
    }
    if (c.sym) {
      // The dequantization reads the stored zeros; sym promises they are all the midpoint,
      // so a checkpoint that breaks the promise is refused rather than served unlike it says.
      const SafetensorsTensor* t = zeros.tensor;
      ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> f,
                       env->NewRandomAccessFile(zeros.file->path));
      std::vector<int32_t> words(static_cast<size_t>(t->size() / 4));
      ASSIGN_OR_RETURN(size_t got, f->Read(zeros.file->data_offset + t->begin, t->size(),
                                           reinterpret_cast<char*>(words.data())));
      if (got != t->size()) return absl::DataLossError(fmt::format("{}: short read", file));
      const uint32_t want = (1u << (c.bits - 1)) - (c.v2 ? 0u : 1u);
      for (int64_t gr = 0; gr < groups; ++gr) {
        for (int64_t n = 0; n < l.out; ++n) {
          const uint32_t z = quant::PackedValue(words.data() + gr * zero_cols, 1, c.bits, n);
          if (z != want) {
            return bad(module + ".qzeros",
                       fmt::format("qzeros[{}][{}] = {}, but quantization_config says sym: true "
                                   "(every stored zero point is {} in checkpoint_format {})",
                                   gr, n, z, want, c.v2 ? "gptq_v2" : "gptq"));
          }
        }
      }
    }
    auto g = by_name.find(module + ".g_idx");
    if (g != by_name.end() && c.method == "gptq") {
      const SafetensorsTensor* t = g->second.tensor;
      if (t->dtype != DType::kI32 || t->shape != std::vector<int64_t>{l.in}) {
        return bad(module + ".g_idx", fmt::format("g_idx must be I32 [{}] (in_features), not "
                                                  "{} {}",
                                                  l.in, DTypeName(t->dtype),
                                                  ShapeToString(t->shape)));
      }
      // The loader indexes the groups with these values: check them once here.
      ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> f,
                       env->NewRandomAccessFile(g->second.file->path));
      std::vector<int32_t> idx(static_cast<size_t>(l.in));
      ASSIGN_OR_RETURN(size_t got, f->Read(g->second.file->data_offset + t->begin, t->size(),
                                           reinterpret_cast<char*>(idx.data())));
      if (got != t->size()) return absl::DataLossError(fmt::format("{}: short read", file));
      for (int64_t k = 0; k < l.in; ++k) {
        if (idx[k] < 0 || idx[k] >= groups) {
          return bad(module + ".g_idx",
                     fmt::format("g_idx[{}] = {} is not a group (0..{})", k, idx[k], groups - 1));
        }
      }
      l.g_idx = true;
    }
    info.linears.emplace(module, l);
  }
  if (info.linears.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: quant_method {} but no tensor ends in .qweight", checkpoint.dir, c.method));
  }
  return info;
}

}  // namespace loadstar::store
