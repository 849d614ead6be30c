#!/usr/bin/env python3
"""The Python side of bench/bench_prequant (SPEC §8 "pre-quantized"): gguf-py's numpy
dequantize and transformers' GGUF loader, timed on the same bytes / file as loadstar.

  prequant_peers.py dequant TYPE FILE ROW_BYTES REPS   best CPU seconds of
                                                       gguf.quants.dequantize over the
                                                       blocks in FILE (rows of ROW_BYTES)
  prequant_peers.py make-gguf OUT QTYPE HIDDEN LAYERS  a llama GGUF (random weights; Linear
                                                       weights Q8_0 quantized by gguf-py,
                                                       or random valid Q4_K blocks)
  prequant_peers.py load GGUF                          seconds of
                                                       AutoModelForCausalLM.from_pretrained(
                                                       dir, gguf_file=..., dtype=float32)
Needs: gguf numpy (dequant, make-gguf); torch transformers (load).
"""
import os
import sys
import time

import numpy as np


def dequant(qtype_name, path, row_bytes, reps):
    import gguf
    qtype = gguf.GGMLQuantizationType[qtype_name]
    data = np.fromfile(path, dtype=np.uint8).reshape(-1, int(row_bytes))
    best = 1e30
    # Process CPU time, as bench_prequant measures loadstar (numpy runs these on one
    # thread), so contention from other work on the machine inflates neither side.
    for _ in range(int(reps)):
        t0 = time.process_time()
        gguf.quants.dequantize(data, qtype)
        best = min(best, time.process_time() - t0)
    print(f"{best:.6f}")


def random_q4k(rng, rows, cols):
    blocks = rng.integers(0, 256, size=(rows * cols // 256, 144), dtype=np.uint8)
    scales = (rng.standard_normal((blocks.shape[0], 2)) * 0.002).astype(np.float16)
    blocks[:, 0:4] = scales.view(np.uint8).reshape(-1, 4)
    return blocks.reshape(rows, -1)


def make_gguf(out, qtype_name, hidden, layers):
    import gguf
    from gguf import GGMLQuantizationType as T
    hidden, layers = int(hidden), int(layers)
    ffn, heads, vocab = hidden * 2, max(1, hidden // 128), 32000
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(out, arch="llama")
    w.add_block_count(layers)
    w.add_context_length(2048)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)

    def linear(name, rows, cols):
        if qtype_name == "Q4_K":
            q = random_q4k(rng, rows, cols)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=T.Q4_K)
        else:
            v = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
            q = gguf.quants.quantize(v, T.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=T.Q8_0)

    w.add_tensor("token_embd.weight", (rng.standard_normal((vocab, hidden)) * 0.02).astype(np.float16))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            linear(f"blk.{i}.{part}.weight", hidden, hidden)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        linear(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        linear(f"blk.{i}.ffn_up.weight", ffn, hidden)
        linear(f"blk.{i}.ffn_down.weight", hidden, ffn)
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    linear("output.weight", vocab, hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def load(path):
    import torch
    from transformers import AutoModelForCausalLM
    t0 = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                         gguf_file=os.path.basename(path), dtype=torch.float32)
    print(f"{time.perf_counter() - t0:.3f}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"dequant": dequant, "make-gguf": make_gguf, "load": load}[cmd](*args)
