#!/usr/bin/env python3
"""Writes an OPT-style causal LM checkpoint with random weights, in Hugging Face format.

The layout (tensor names, shapes, config.json fields) is that of transformers'
OPTForCausalLM as saved by `save_pretrained(safe_serialization=True)`: the output head
is tied to the token embedding and not stored. Weights are N(0, 0.02) in float16, biases
zero, norms one, as OPT's `_init_weights` would make them. Only numpy is needed; the
safetensors file is written by hand (8-byte little-endian header length, JSON header,
data), sharded like transformers does when `--shard-mib` is exceeded.

Usage: make_opt_checkpoint.py OUT_DIR [--preset opt-125m|opt-350m|opt-1.3b] [--seed N]
"""
import argparse
import json
import os
import struct

import numpy as np

PRESETS = {
    # hidden, layers, heads, ffn
    "opt-125m": (768, 12, 12, 3072),
    "opt-350m-like": (1024, 24, 16, 4096),
    "opt-1.3b": (2048, 24, 32, 8192),
}
VOCAB = 50272
MAX_POSITIONS = 2048
POSITION_OFFSET = 2  # OPT's learned positional embedding reserves two rows


def tensors_for(hidden, layers, ffn):
    """(name, shape, kind) in the order transformers writes them."""
    out = [
        ("model.decoder.embed_tokens.weight", (VOCAB, hidden), "w"),
        ("model.decoder.embed_positions.weight", (MAX_POSITIONS + POSITION_OFFSET, hidden), "w"),
    ]
    for i in range(layers):
        p = f"model.decoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out.append((p + f"self_attn.{proj}.weight", (hidden, hidden), "w"))
            out.append((p + f"self_attn.{proj}.bias", (hidden,), "zero"))
        out.append((p + "self_attn_layer_norm.weight", (hidden,), "one"))
        out.append((p + "self_attn_layer_norm.bias", (hidden,), "zero"))
        out.append((p + "fc1.weight", (ffn, hidden), "w"))
        out.append((p + "fc1.bias", (ffn,), "zero"))
        out.append((p + "fc2.weight", (hidden, ffn), "w"))
        out.append((p + "fc2.bias", (hidden,), "zero"))
        out.append((p + "final_layer_norm.weight", (hidden,), "one"))
        out.append((p + "final_layer_norm.bias", (hidden,), "zero"))
    out.append(("model.decoder.final_layer_norm.weight", (hidden,), "one"))
    out.append(("model.decoder.final_layer_norm.bias", (hidden,), "zero"))
    return out


def make_array(rng, shape, kind):
    if kind == "w":
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
    if kind == "one":
        return np.ones(shape, dtype=np.float16)
    return np.zeros(shape, dtype=np.float16)


def write_safetensors(path, arrays):
    header, offset = {}, 0
    for name, arr in arrays:
        header[name] = {"dtype": "F16", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, arr in arrays:
            f.write(np.ascontiguousarray(arr).tobytes())
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--preset", default="opt-125m", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-mib", type=int, default=2048,
                        help="start a new shard past this size (as max_shard_size)")
    args = parser.parse_args()

    hidden, layers, heads, ffn = PRESETS[args.preset]
    os.makedirs(args.out_dir, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    shards, current, current_bytes = [], [], 0
    for name, shape, kind in tensors_for(hidden, layers, ffn):
        arr = make_array(rng, shape, kind)
        if current and current_bytes + arr.nbytes > args.shard_mib << 20:
            shards.append(current)
            current, current_bytes = [], 0
        current.append((name, arr))
        current_bytes += arr.nbytes
    shards.append(current)

    if len(shards) == 1:
        write_safetensors(os.path.join(args.out_dir, "model.safetensors"), shards[0])
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(os.path.join(args.out_dir, fname), shard)
            for name, arr in shard:
                weight_map[name] = fname
                total += arr.nbytes
        with open(os.path.join(args.out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

    config = {
        "_name_or_path": f"loadstar-random-{args.preset}",
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        "activation_function": "relu",
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "do_layer_norm_before": True,
        "dropout": 0.1,
        "enable_bias": True,
        "eos_token_id": 2,
        "ffn_dim": ffn,
        "hidden_size": hidden,
        "init_std": 0.02,
        "layer_norm_elementwise_affine": True,
        "layerdrop": 0.0,
        "max_position_embeddings": MAX_POSITIONS,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": 1,
        "prefix": "</s>",
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
        "use_cache": True,
        "vocab_size": VOCAB,
        "word_embed_proj_dim": hidden,
    }
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {args.preset} ({len(shards)} shard(s)) to {args.out_dir}")


if __name__ == "__main__":
    main()
