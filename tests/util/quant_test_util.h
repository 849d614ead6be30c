// Test helpers for quantized checkpoints: a QuantConfig in one call, and the tensors
// quant::PrepareTensor gives for every tensor of a CheckpointBuilder (what a quantized
// store variant or a quantize-while-loading load must hold, tensor for tensor).
#pragma once

#include <map>
#include <string>

#include "base/dtype.h"
#include "quant/prepare.h"
#include "tests/util/checkpoint_builder.h"

namespace loadstar::testing {

quant::QuantConfig QuantConfigOf(quant::QuantType type, int blocksize = 64,
                                 bool double_quant = false, DType torch_dtype = DType::kF16);

// name -> (dtype, shape, bytes) that quant::PrepareTensor gives for every builder tensor
// (Conv1D weights recognized by `model_type`, as the store and loader do). Adds a gtest
// failure for a tensor PrepareTensor rejects.
std::map<std::string, quant::NamedTensor> PreparedTensors(const CheckpointBuilder& b,
                                                          const quant::QuantConfig& config,
                                                          const std::string& model_type = "");

// A small Llama whose tensors take every path of a quantized save: embeddings, norms and
// lm_head stay unquantized, f32/bf16 tensors are cast, up_proj (8320 elements) ends in a
// tail block; plus a generation_config.json to keep.
CheckpointBuilder MixedLlama();

}  // namespace loadstar::testing
