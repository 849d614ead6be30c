// Probe: how far a quantized linear layer of a loaded instance is from the unquantized
// model — y = x W^T with the quantized weight (quant/'s CPU twins of the GPU layers:
// Fp4Linear for nf4/fp4, Int8Linear for LLM.int8) against LinearReference with the
// checkpoint's weight read from the store, for `rows` rows of fixed pseudo-random fp16
// activations.
//
// The quantized weight comes from the instance itself when it holds the bitsandbytes
// state-dict layout (quant/quant_state.h: "<m>.weight" + ".absmax"/".quant_state..." or
// ".SCB"); otherwise the loaded unquantized weight is quantized here with the
// deployment's quantization, which is what a quantize-at-load instance would hold.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "loadstar/v1/worker.pb.h"
#include "store/store.h"

namespace loadstar::daemon {

// Reads `n` bytes of a loaded tensor from `offset`.
using TensorReader =
    std::function<absl::Status(const std::string& name, uint64_t offset, uint64_t n, char* dst)>;

absl::StatusOr<loadstar::v1::ProbeResponse> ProbeQuantizedWeight(
    const loadstar::v1::InstanceHandle& handle, const TensorReader& read,
    const loadstar::v1::LoadSpec& spec, const store::Store& store, const std::string& tensor,
    uint32_t rows);

}  // namespace loadstar::daemon
