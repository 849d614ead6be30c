#include "daemon/load_spec.h"

#include <fmt/format.h>

#include <optional>

#include "base/status_macros.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

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

}  // namespace loadstar::daemon
