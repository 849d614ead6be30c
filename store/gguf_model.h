// Maps a GGUF file (store/gguf.h) to the Hugging Face model transformers builds from it
// (`from_pretrained(dir, gguf_file=...)`): the HF architecture, a config.json, and each
// tensor's HF state-dict name. Facts from transformers' integrations/ggml.py
// (GGUF_CONFIG_MAPPING) and modeling_gguf_pytorch_utils.py (load_gguf_checkpoint,
// LlamaTensorProcessor), and gguf-py's tensor name map:
//   - general.architecture llama | qwen2; llama with general.name exactly "mistral"
//     becomes mistral (transformers' test is list membership, so only an exact name).
//     Anything else is refused, naming the architecture.
//   - config: <arch>.context_length -> max_position_embeddings, block_count ->
//     num_hidden_layers, feed_forward_length -> intermediate_size, embedding_length ->
//     hidden_size, rope.dimension_count -> head_dim (llama/mistral only), rope.freq_base
//     -> rope_theta, attention.head_count -> num_attention_heads, attention.head_count_kv
//     -> num_key_value_heads, attention.layer_norm_rms_epsilon -> rms_norm_eps,
//     vocab_size; vocab_size from the tokenizer's token count when absent;
//     tie_word_embeddings = no output.weight.
//   - names: token_embd -> model.embed_tokens, output_norm -> model.norm, output ->
//     lm_head, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
//     ffn_up, ffn_down} -> model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
//     post_attention_layernorm, mlp.{gate,up,down}_proj}; rope_freqs (llama 3's rotary
//     factors, which HF recomputes) is dropped as transformers drops it; any other
//     tensor is an error naming it.
//   - llama files (mistral included) store attn_q / attn_k rows permuted for llama.cpp's
//     rotary layout; transformers undoes it with num_attention_heads (q) or
//     num_key_value_heads (k, when it differs), and only when both are in the config.
//   - tokenizer: transformers builds it from the tokenizer.ggml.* metadata
//     (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`); the store keeps that
//     metadata as `tokenizer.gguf`, a GGUF file of the same key-value section and no
//     tensors, which transformers reads the same way.
//
// Thread safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "base/env.h"
#include "store/gguf.h"
#include "store/prequant_info.h"

namespace loadstar::store {

struct GgufModelTensor {
  const GgufTensor* source = nullptr;  // points into the GgufFile given to MapGgufModel
  std::string hf_name;
  // As stored: F32/F16/BF16 tensors keep their dtype and the logical shape; block types
  // are U8 [rows..., bytes per row].
  DType stored_dtype = DType::kU8;
  std::vector<int64_t> stored_shape;
};

struct GgufModel {
  std::string model_type;   // HF model_type: llama | mistral | qwen2
  std::string config_json;  // the generated config.json
  std::vector<GgufModelTensor> tensors;  // in file order, dropped tensors left out
  PrequantInfo info;                     // format "gguf", one entry per tensor
};

// InvalidArgument naming the file and the key or tensor at fault.
absl::StatusOr<GgufModel> MapGgufModel(const GgufFile& file);

// The bytes of `tokenizer.gguf` for `gguf` (read from `file`, the same file): its header
// with no tensors and its whole key-value section. nullopt when the file has no
// tokenizer.ggml.model or its metadata exceeds the kept-file limit (kMaxKeptFileBytes).
absl::StatusOr<std::optional<std::string>> GgufTokenizerFile(const GgufFile& gguf,
                                                             const RandomAccessFile& file);

}  // namespace loadstar::store
