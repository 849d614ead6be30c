#!/usr/bin/env python3
"""GPTQ / AWQ checkpoints packed by a numpy packer written from the format facts (SPEC
§6.1), with their numpy dequantization, for tests/store/gptq_reference_test.cc.

Usage: gptq_reference.py OUT_DIR CASE
CASE: gptq-v1-4bit | gptq-v2-3bit-actorder | gptq-v1-2bit-nogroup | gptq-v2-8bit | awq-gemm
      | bad-qweight-shape | missing-scales
Writes OUT_DIR/hf/config.json (with quantization_config), OUT_DIR/hf/model.safetensors
and, per packed module M, OUT_DIR/expected/M.f32: the dequantized HF weight [out, in] as little-endian
fp32, W[n, k] = float32(scale[g, n]) * float32(q - zero) with g = g_idx[k] (act-order) or
k // group_size; zero = stored + 1 for checkpoint_format gptq, stored for gptq_v2.
Needs: numpy, safetensors.
"""
import json
import os
import re
import sys

import numpy as np
from safetensors.numpy import save_file


def pack_bits(values, bits):
    """Little-endian bit stream of `bits`-bit values along axis 0 -> int32 words."""
    values = values.astype(np.uint64)
    n = values.shape[0]
    words = np.zeros((n * bits // 32,) + values.shape[1:], dtype=np.uint64)
    for i in range(n):
        bit = i * bits
        w, shift = bit // 32, bit % 32
        words[w] |= (values[i] << np.uint64(shift)) & np.uint64(0xFFFFFFFF)
        if shift + bits > 32:
            words[w + 1] |= values[i] >> np.uint64(32 - shift)
    return words.astype(np.uint32).view(np.int32)


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def pack_awq(values):
    """[rows, cols] 4-bit values -> [rows, cols/8] int32, nibble i = column 8c + order[i]."""
    rows, cols = values.shape
    out = np.zeros((rows, cols // 8), dtype=np.uint32)
    for c in range(cols // 8):
        for i in range(8):
            out[:, c] |= values[:, 8 * c + AWQ_ORDER[i]].astype(np.uint32) << np.uint32(4 * i)
    return out.view(np.int32)


def gptq_layer(rng, name, in_f, out_f, bits, group, act_order, v2, tensors, expected,
               sym=False):
    groups = 1 if group == -1 else (in_f + group - 1) // group
    gs = in_f if group == -1 else group
    q = rng.integers(0, 2 ** bits, size=(in_f, out_f))
    zero = rng.integers(1, 2 ** bits, size=(groups, out_f))  # the real zero point
    if sym:
        zero = np.full((groups, out_f), 2 ** (bits - 1))  # symmetric: the midpoint
    scales = (rng.random((groups, out_f)) * 0.02 + 0.001).astype(np.float16)
    if act_order:
        g_idx = rng.permutation(np.arange(in_f) // gs).astype(np.int32)
    else:
        g_idx = (np.arange(in_f) // gs).astype(np.int32)
    stored_zero = zero if v2 else zero - 1
    tensors[f"{name}.qweight"] = pack_bits(q, bits)
    tensors[f"{name}.qzeros"] = pack_bits(stored_zero.T, bits).T.copy()
    tensors[f"{name}.scales"] = scales
    if act_order:
        tensors[f"{name}.g_idx"] = g_idx
    w = scales.astype(np.float32)[g_idx] * (q - zero[g_idx]).astype(np.float32)
    expected[name] = np.ascontiguousarray(w.T.astype(np.float32))


def awq_layer(rng, name, in_f, out_f, group, tensors, expected):
    groups = in_f // group
    q = rng.integers(0, 16, size=(in_f, out_f))
    z = rng.integers(0, 16, size=(groups, out_f))
    scales = (rng.random((groups, out_f)) * 0.02 + 0.001).astype(np.float16)
    g = np.arange(in_f) // group
    tensors[f"{name}.qweight"] = pack_awq(q)
    tensors[f"{name}.qzeros"] = pack_awq(z)
    tensors[f"{name}.scales"] = scales
    w = (q - z[g]).astype(np.float32) * scales.astype(np.float32)[g]
    expected[name] = np.ascontiguousarray(w.T.astype(np.float32))


def main():
    out, case = sys.argv[1], sys.argv[2]
    hf, exp = os.path.join(out, "hf"), os.path.join(out, "expected")
    os.makedirs(hf, exist_ok=True)
    os.makedirs(exp, exist_ok=True)
    rng = np.random.default_rng(sum(case.encode()))
    tensors, expected = {}, {}
    tensors["model.norm.weight"] = rng.standard_normal(64).astype(np.float16)
    tensors["model.layers.0.mlp.up_proj.bias"] = rng.standard_normal(96).astype(np.float16)
    qc = {}
    if case.startswith("gptq") or case in ("bad-qweight-shape", "missing-scales", "sym-broken"):
        found = re.search(r"(\d)bit", case)
        bits = int(found.group(1)) if found else 4
        group = -1 if "nogroup" in case else 32
        act = "actorder" in case
        v2 = "-v2-" in case
        sym = case.endswith("-sym")
        gptq_layer(rng, "model.layers.0.self_attn.q_proj", 64, 64, bits, group, act, v2, tensors,
                   expected, sym)
        gptq_layer(rng, "model.layers.0.mlp.up_proj", 64, 96, bits, group, act, v2, tensors,
                   expected, sym)
        qc = {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": act,
              "sym": sym or case == "sym-broken",
              "checkpoint_format": "gptq_v2" if v2 else "gptq"}
        if case == "bad-qweight-shape":
            qw = tensors["model.layers.0.mlp.up_proj.qweight"]
            tensors["model.layers.0.mlp.up_proj.qweight"] = qw[:-4].copy()  # 32 inputs short
        if case == "missing-scales":
            del tensors["model.layers.0.self_attn.q_proj.scales"]
    elif case == "awq-gemm":
        awq_layer(rng, "model.layers.0.self_attn.q_proj", 64, 64, 32, tensors, expected)
        awq_layer(rng, "model.layers.0.mlp.up_proj", 64, 96, 32, tensors, expected)
        qc = {"quant_method": "awq", "bits": 4, "group_size": 32, "version": "gemm",
              "zero_point": True}
    else:
        raise SystemExit(f"unknown case {case}")
    save_file(tensors, os.path.join(hf, "model.safetensors"))
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "quantization_config": qc}, f)
    for name, w in expected.items():
        w.astype("<f4").tofile(os.path.join(exp, name + ".f32"))


if __name__ == "__main__":
    main()
