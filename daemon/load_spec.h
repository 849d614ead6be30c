// The worker's side of LoadSpec: the quant::QuantConfig a load asks for.
#pragma once

#include "absl/status/statusor.h"
#include "loadstar/v1/worker.pb.h"
#include "quant/policy.h"

namespace loadstar::daemon {

// Quantization and torch_dtype of `spec` (the controller filled them from the
// deployment's parsed config) as quant/ and loader/ take them. InvalidArgument for a
// method or dtype name quant/ does not know.
absl::StatusOr<quant::QuantConfig> QuantConfigFromLoadSpec(const loadstar::v1::LoadSpec& spec);

}  // namespace loadstar::daemon
