#include "store/bnb_checkpoint.h"

#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/status_macros.h"
#include "quant/policy.h"

namespace loadstar::store {

absl::StatusOr<std::optional<PrequantInfo>> MapBnbCheckpoint(Env* env,
                                                             const HfCheckpoint& checkpoint) {
  const std::string path = JoinPath(checkpoint.dir, "config.json");
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(env, path, 16ull << 20));
  nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!root.is_object() || !root.contains("quantization_config")) return std::optional<PrequantInfo>();
  const nlohmann::json& q = root["quantization_config"];
  if (!q.is_object() || !q.contains("quant_method") || q["quant_method"] != "bitsandbytes") {
    return std::optional<PrequantInfo>();
  }
  // Saved configs carry keys a deployment does not (bnb_4bit_quant_storage, ...): keep
  // the fields ParseQuantizationConfig knows by name and let it judge their values.
  absl::StatusOr<quant::QuantConfig> parsed =
      quant::ParseQuantizationConfig(q, "quantization_config");
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {}", path, std::string(parsed.status().message())));
  }
  const quant::QuantConfig& c = *parsed;
  if (c.type == quant::QuantType::kNone) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: quantization_config: quant_method bitsandbytes but neither load_in_4bit nor "
        "load_in_8bit",
        path));
  }
  std::map<std::string, std::pair<DType, std::string>> tensors;  // name -> dtype, file
  for (const SafetensorsFile& f : checkpoint.shards) {
    for (const SafetensorsTensor& t : f.tensors) tensors[t.name] = {t.dtype, f.path};
  }
  int quantized = 0;
  for (const auto& entry : tensors) {
    const std::string& name = entry.first;
    const std::string& file = entry.second.second;
    auto missing = [&](const std::string& weight, const std::string& part) {
      return absl::InvalidArgumentError(
          fmt::format("{}: tensor \"{}\": its {} is missing (bitsandbytes {} checkpoint)", file,
                      weight, part, c.VariantKey()));
    };
    if (c.type == quant::QuantType::kInt8) {
      if (!name.ends_with(".SCB")) continue;
      const std::string w = name.substr(0, name.size() - 4) + ".weight";
      auto it = tensors.find(w);
      if (it == tensors.end()) return missing(name, w);
      if (it->second.first != DType::kI8) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: tensor \"{}\": an int8 weight must be I8, not {}", file, w,
            DTypeName(it->second.first)));
      }
      ++quantized;
      continue;
    }
    const size_t at = name.find(".quant_state.bitsandbytes__");
    if (at == std::string::npos) continue;
    const std::string w = name.substr(0, at);
    const std::string kind = name.substr(at + std::string(".quant_state.bitsandbytes__").size());
    if (kind != quant::QuantTypeName(c.type)) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tensor \"{}\": a {} quant state in a checkpoint whose quantization_config says "
          "{}",
          file, name, kind, quant::QuantTypeName(c.type)));
    }
    std::vector<std::string> parts = {"", ".absmax", ".quant_map"};
    if (c.double_quant) parts.insert(parts.end(), {".nested_absmax", ".nested_quant_map"});
    for (const std::string& p : parts) {
      if (!tensors.contains(w + p)) return missing(name, w + p);
    }
    if (tensors[w].first != DType::kU8) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tensor \"{}\": a packed 4-bit weight must be U8, not {}", file, w,
          DTypeName(tensors[w].first)));
    }
    ++quantized;
  }
  if (quantized == 0) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: quantization_config says bitsandbytes {} but no tensor of {} is quantized in "
        "that layout",
        path, c.VariantKey(), checkpoint.dir));
  }
  PrequantInfo info;
  info.format = "bitsandbytes";
  info.quantization_json = c.ToHfJson().dump();
  return std::optional<PrequantInfo>(std::move(info));
}

}  // namespace loadstar::store
