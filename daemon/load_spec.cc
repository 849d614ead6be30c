#include "daemon/load_spec.h"

#include <fmt/format.h>

#include <algorithm>

#include <limits>
#include <optional>

#include "base/status_macros.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

v1::LoadSpec ToLoadSpec(const DeploymentConfig& c) {
  v1::LoadSpec spec;
  spec.set_model(c.model);
  spec.set_num_gpus(c.num_gpus);
  spec.set_torch_dtype(c.torch_dtype);
  spec.set_device_map(c.device_map);
  for (const auto& [prefix, gpu] : c.layer_map) (*spec.mutable_layer_map())[prefix] = gpu;
  for (const auto& [gpu, bytes] : c.max_memory) (*spec.mutable_max_memory())[gpu] = bytes;
  v1::Quantization* q = spec.mutable_quantization();
  // "" when the deployment named no quantization (quant::QuantConfig::unspecified).
  q->set_method(c.quantization.keep_prequantized ? std::string("keep")
                : c.quantization.unspecified     ? std::string()
                                                 : std::string(quant::QuantTypeName(c.quantization.type)));
  q->set_blocksize(static_cast<uint32_t>(c.quantization.blocksize));
  q->set_double_quant(c.quantization.double_quant);
  q->set_compute_dtype(std::string(TorchDTypeName(c.quantization.compute_dtype)));
  q->set_llm_int8_threshold(c.quantization.llm_int8_threshold);
  for (const std::string& m : c.quantization.skip_modules) q->add_skip_modules(m);
  return spec;
}


absl::StatusOr<quant::QuantConfig> QuantConfigFromLoadSpec(const v1::LoadSpec& spec) {
  const v1::Quantization& q = spec.quantization();
  quant::QuantConfig c;
  if (!spec.torch_dtype().empty()) {
    ASSIGN_OR_RETURN(c.torch_dtype, quant::ParseTorchDtype(spec.torch_dtype(), "torch_dtype"));
  }
  if (q.method() == "keep") c.keep_prequantized = true;
  if (q.method().empty()) c.unspecified = true;
  if (q.method().empty() || q.method() == "none" || q.method() == "keep") return c;
  std::optional<quant::QuantType> type = quant::ParseQuantType(q.method());
  if (!type) {
    return absl::InvalidArgumentError(
        fmt::format("quantization.method: unknown \"{}\"", q.method()));
  }
  c.type = *type;
  if (q.blocksize() > 0) c.blocksize = static_cast<int>(q.blocksize());
  c.double_quant = q.double_quant();
  if (!q.compute_dtype().empty()) {
    ASSIGN_OR_RETURN(c.compute_dtype, quant::ParseTorchDtype(q.compute_dtype(),
                                                             "quantization.compute_dtype"));
  }
  if (q.llm_int8_threshold() > 0) c.llm_int8_threshold = static_cast<float>(q.llm_int8_threshold());
  c.skip_modules.assign(q.skip_modules().begin(), q.skip_modules().end());
  return c;
}

absl::StatusOr<loader::PlanOptions> PlanOptionsFromLoadSpec(const v1::LoadSpec& spec,
                                                            uint32_t num_devices) {
  loader::PlanOptions plan;
  if (spec.device_map() == "custom") {
    plan.placement = loader::Placement::kCustom;
    for (const auto& [prefix, gpu] : spec.layer_map()) {
      if (gpu >= num_devices) {
        return absl::InvalidArgumentError(
            fmt::format("backend_config.device_map.{}: GPU {} is beyond num_gpus {}", prefix,
                        gpu, num_devices));
      }
      plan.layer_map.emplace_back(prefix, static_cast<int>(gpu));
    }
    std::sort(plan.layer_map.begin(), plan.layer_map.end());
  } else if (num_devices == 1) {
    plan.placement = loader::Placement::kSingle;
  } else if (spec.device_map() == "tensor_parallel") {
    plan.placement = loader::Placement::kTensorParallel;
  } else if (spec.device_map() == "auto" || spec.device_map().empty()) {
    plan.placement = loader::Placement::kAuto;
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "LoadSpec.device_map '{}' is none of auto, tensor_parallel or a layer map (Deploy "
        "refuses any other value; this LoadSpec was not made by a matching controller)",
        spec.device_map()));
  }
  if (!spec.max_memory().empty()) {
    plan.max_memory.assign(num_devices, std::numeric_limits<uint64_t>::max());
    for (const auto& [gpu, bytes] : spec.max_memory()) {
      if (gpu >= num_devices) {
        return absl::InvalidArgumentError(fmt::format(
            "backend_config.max_memory.{}: GPU {} is beyond num_gpus {}", gpu, gpu, num_devices));
      }
      plan.max_memory[gpu] = bytes;
    }
  }
  return plan;
}

}  // namespace loadstar::daemon
