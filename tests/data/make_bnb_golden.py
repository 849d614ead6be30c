#!/usr/bin/env python3
"""Writes tests/data/bnb_golden/: golden vectors for loadstar's quant/ (bit-exact tests).

Run:  python3 -m venv .venv-bnb && .venv-bnb/bin/pip install torch bitsandbytes numpy
      CUDA_VISIBLE_DEVICES= .venv-bnb/bin/python tests/data/make_bnb_golden.py

Where the vectors come from (stated per case in manifest.json, field "source"):
  * bitsandbytes itself (CPU wheel, version recorded in the manifest): the signed dynamic
    map (create_dynamic_map), the 4-bit quant_maps (get_4bit_type), int8 row-wise weights
    (int8_vectorwise_quant / int8_vectorwise_dequant), the absmax mean (torch .mean()).
  * "cuda-semantics" re-implementation (numpy, below) for 4-bit blockwise quantize/
    dequantize and the nested 8-bit quantize: bitsandbytes' CPU backend differs from its
    CUDA kernels (which loadstar matches), so the CUDA semantics are re-implemented here
    from csrc/kernels.cu (kQuantizeBlockwise, dQuantizeNF4/FP4, dQuantize,
    kDequantizeBlockwise) and checked against bnb-CPU on the inputs where the two agree:
      - all-zero block: CUDA 1/0=inf, 0*inf=NaN -> code 0 (NF4 -1.0, FP4 +0); CPU clamps
        absmax to 1e-38 and gets the code of 0.0 (NF4 7).
      - tail block: CUDA multiplies by 1/absmax; CPU divides by absmax.
      - nested 8-bit: bnb-CPU's native quantize_blockwise sometimes picks the farther of two
        neighbours; dQuantize (binary search + midpoints) picks the nearer (asserted).
      - FP4 tiny negatives: CUDA sets the sign bit (code 8, -0.0), CPU picks code 0.
      - decision thresholds: CUDA uses the literal tree constants (FP4: 0.583333f,
        0.00260417f, ...); CPU bucketizes on fp32 midpoints of the code table, which differ
        in the last bits, so values within an ulp or so of a threshold can differ.
    The script asserts that, away from those cases, CUDA-semantics == bnb-CPU bit for bit
    and prints the agreement statistics.
Everything is written as raw little-endian arrays plus manifest.json.
"""
import json
import os
from fractions import Fraction
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # bnb's torch.compile'd helpers: eager is enough

import numpy as np
import torch

torch.set_default_device("cpu")
import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bnb_golden")
F32 = np.float32

# ---------------------------------------------------------------- CUDA semantics (numpy)

NF4 = np.array(F.get_4bit_type("nf4", device="cpu").tolist(), dtype=F32)
FP4 = np.array(F.get_4bit_type("fp4", device="cpu").tolist(), dtype=F32)
DYN = F.create_dynamic_map(signed=True).numpy().astype(F32)


NF4_THRESHOLDS = [0.03979014977812767, 0.3893125355243683, 0.6427869200706482,
                  0.8614784181118011, 0.5016634166240692, 0.2035212516784668,
                  0.2920137718319893, 0.1202552504837513, -0.33967943489551544,
                  -0.13791173323988914, -0.045525018125772476, -0.23460740596055984,
                  -0.6106329262256622, -0.4599952697753906, -0.8480964004993439]
FP4_THRESHOLDS = [0.29166667, 0.583333, 0.8333333, 0.4166667, 0.0859375, 0.20833333,
                  0.00260417]


def f32_literal(v):
    """The float32 a C/CUDA literal `<v>f` denotes: the decimal rounded once to fp32.

    F32(python_float) rounds twice (decimal -> double -> float), which differs by an ulp
    for some of the tree constants."""
    exact = Fraction(repr(v)) if isinstance(v, float) else Fraction(v)
    d = F32(float(exact))
    cands = [np.nextafter(d, F32(-np.inf)), d, np.nextafter(d, F32(np.inf))]
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - exact),
                                     int(np.array(c, F32).view(np.uint32)) & 1))
    return F32(best)


def nf4_tree(x):
    """dQuantizeNF4, literally (strict > on the kernel's float literals)."""
    c = f32_literal
    w = np.where
    return w(x > c(0.03979014977812767),
             w(x > c(0.3893125355243683),
               w(x > c(0.6427869200706482), w(x > c(0.8614784181118011), 15, 14),
                 w(x > c(0.5016634166240692), 13, 12)),
               w(x > c(0.2035212516784668), w(x > c(0.2920137718319893), 11, 10),
                 w(x > c(0.1202552504837513), 9, 8))),
             w(x > c(-0.33967943489551544),
               w(x > c(-0.13791173323988914), w(x > c(-0.045525018125772476), 7, 6),
                 w(x > c(-0.23460740596055984), 5, 4)),
               w(x > c(-0.6106329262256622), w(x > c(-0.4599952697753906), 3, 2),
                 w(x > c(-0.8480964004993439), 1, 0)))).astype(np.uint8)


def fp4_tree(x):
    """dQuantizeFP4, literally."""
    sign = np.where(x < 0, 8, 0)
    a = np.abs(x)
    c = f32_literal
    w = np.where
    mag = w(a > c(0.29166667),
            w(a > c(0.583333), w(a > c(0.8333333), 3, 2), w(a > c(0.4166667), 5, 4)),
            w(a > c(0.0859375), w(a > c(0.20833333), 7, 6), w(a > c(0.00260417), 1, 0)))
    return (mag + sign).astype(np.uint8)


def blocks_of(x, bs):
    n = x.size
    nb = -(-n // bs)
    xp = np.zeros(nb * bs, dtype=F32)
    xp[:n] = x
    return xp.reshape(nb, bs)


def cuda_quantize_4bit(x32, bs, qt):
    """x32: fp32 values of the input (exact widening of f16/bf16). Returns packed, absmax."""
    n = x32.size
    X = blocks_of(x32, bs)
    with np.errstate(all="ignore"):
        absmax = np.abs(X).max(axis=1).astype(F32)   # pads are 0: max over real elements
        inv = (F32(1.0) / absmax).astype(F32)
        xn = (X * inv[:, None]).astype(F32)
    codes = (nf4_tree if qt == "nf4" else fp4_tree)(xn).reshape(-1)
    nbytes = (n + 1) // 2
    codes = codes[: 2 * nbytes]
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    return packed, absmax


def fp4_value_cuda(code):
    """dDequantizeFP4Tree: lut[code & 7] * (1 - 2*sign)."""
    sign = F32(1.0) - F32(2.0) * ((code & 8) >> 3).astype(F32)
    return (FP4[code & 7] * sign).astype(F32)


def cuda_dequantize_4bit(packed, absmax, n, bs, qt):
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 15
    codes = codes[:n]
    lut = NF4[codes] if qt == "nf4" else fp4_value_cuda(codes)
    scale = np.repeat(absmax, bs)[:n]
    return (lut * scale).astype(F32)                 # fp32; cast to T once by the caller


def dquantize(code, x):
    """dQuantize<0> (binary search over the sorted 256-entry code), vectorized."""
    x = x.astype(F32)
    m = x.size
    pivot = np.full(m, 127)
    upper_pivot = np.full(m, 255)
    lower_pivot = np.zeros(m, dtype=np.int64)
    lower = np.full(m, F32(-1.0), dtype=F32)
    upper = np.full(m, F32(1.0), dtype=F32)
    val = code[pivot]
    i = 64
    while i > 0:
        gt = x > val
        lower_pivot = np.where(gt, pivot, lower_pivot)
        lower = np.where(gt, val, lower)
        upper_pivot = np.where(gt, upper_pivot, pivot)
        upper = np.where(gt, upper, val)
        pivot = np.where(gt, pivot + i, pivot - i)
        val = code[pivot]
        i >>= 1
    upper = np.where(upper_pivot == 255, code[255], upper).astype(F32)
    lower = np.where(lower_pivot == 0, code[0], lower).astype(F32)
    gt = x > val
    mid_up = ((upper + val) * F32(0.5)).astype(F32)
    mid_lo = ((lower + val) * F32(0.5)).astype(F32)
    r = np.where(gt, np.where(x > mid_up, upper_pivot, pivot),
                 np.where(x < mid_lo, lower_pivot, pivot))
    return r.astype(np.uint8)


def cuda_quantize_8bit(x32, bs):
    n = x32.size
    X = blocks_of(x32, bs)
    with np.errstate(all="ignore"):
        absmax = np.abs(X).max(axis=1).astype(F32)
        inv = (F32(1.0) / absmax).astype(F32)
        xn = (X * inv[:, None]).astype(F32).reshape(-1)[:n]
    return dquantize(DYN, xn), absmax


# ---------------------------------------------------------------- helpers

manifest = {"bitsandbytes": bnb.__version__, "torch": torch.__version__, "cases": []}
total_bytes = 0
stats = {}


def save(name, arr):
    global total_bytes
    arr = np.ascontiguousarray(arr)
    path = os.path.join(OUT, name)
    arr.tofile(path)
    total_bytes += arr.nbytes
    return name


TORCH_DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def as_input(x64, dtype):
    """Returns (torch tensor of dtype, raw numpy bits, fp32 numpy values)."""
    t = torch.tensor(x64, dtype=torch.float32).to(TORCH_DT[dtype])
    if dtype == "F32":
        raw = t.numpy().copy()
    else:
        raw = t.view(torch.int16).numpy().view(np.uint16).copy()
    return t, raw, t.float().numpy().astype(F32)


def bump(key, agree, total):
    a, t = stats.get(key, (0, 0))
    stats[key] = (a + int(agree), t + int(total))


def case_4bit(name, x64, shape, dtype, qt, bs, nested=False):
    t, raw, x32 = as_input(x64.reshape(-1), dtype)
    t = t.reshape(shape)
    n = x32.size
    packed, absmax = cuda_quantize_4bit(x32, bs, qt)

    # bnb-CPU cross-check on full, non-zero blocks.
    q_cpu, st = F.quantize_4bit(t, blocksize=bs, quant_type=qt, compress_statistics=False)
    cpu_packed = q_cpu.reshape(-1).numpy()
    cpu_absmax = st.absmax.numpy()
    full = n // bs
    ok_blocks = [b for b in range(full) if absmax[b] != 0]
    assert np.array_equal(cpu_absmax[ok_blocks], absmax[ok_blocks]), name
    codes_c = np.stack([packed >> 4, packed & 15], 1).reshape(-1)[:n]
    codes_b = np.stack([cpu_packed >> 4, cpu_packed & 15], 1).reshape(-1)[:n]
    sel = np.concatenate([np.arange(b * bs, (b + 1) * bs) for b in ok_blocks]) if ok_blocks else []
    if len(sel):
        agree = codes_c[sel] == codes_b[sel]
        bump(f"4bit-{qt} codes (full non-zero blocks)", agree.sum(), agree.size)
        # Disagreements must sit next to a decision threshold (bucketize vs literal tree).
        if qt == "fp4":
            # CUDA: sign bit from x < 0 even when the magnitude code is 0 (code 8, -0.0);
            # CPU bucketize picks code 0 for tiny negatives. Same value up to the sign of 0.
            zero_sign = (~agree) & ((codes_c[sel] & 7) == 0) & ((codes_b[sel] & 7) == 0)
            bump("4bit-fp4 codes differing only in the sign of zero", zero_sign.sum(), agree.size)
            agree = agree | zero_sign
        if not agree.all():
            xn = (x32[sel] * (F32(1) / np.repeat(absmax[ok_blocks], bs))).astype(F32)
            bad = xn[~agree]
            print(f"  {name}: {len(bad)} code(s) differ from bnb-CPU at x_n={bad[:4]}",
                  file=sys.stderr)
            tree = np.array([f32_literal(t) for t in (NF4_THRESHOLDS if qt == "nf4" else FP4_THRESHOLDS)], dtype=F32)
            near = np.abs(np.abs(bad)[:, None] - np.abs(tree)[None, :]).min(axis=1) <= 1e-6
            assert near.all(), (name, bad[~near])
            bump(f"4bit-{qt} codes differing at a threshold (|x_n - t| <= 1e-6)", len(bad), agree.size)

    entry = {"name": name, "kind": "4bit", "quant_type": qt, "blocksize": bs,
             "dtype": dtype, "shape": list(shape), "nested": nested,
             "source": "cuda-semantics (checked vs bnb-CPU)",
             "input": save(f"{name}.input.bin", raw),
             "packed": save(f"{name}.packed.bin", packed)}
    if nested:
        # offset: torch's own fp32 mean, as quantize_4bit(compress_statistics=True).
        offset = torch.tensor(absmax).mean().numpy().astype(F32)
        centered = (absmax - offset).astype(F32)
        qcodes, nabs = cuda_quantize_8bit(centered, 256)
        # bnb-CPU's native quantize_blockwise on the same centered vector.
        q2, st2 = F.quantize_blockwise(torch.tensor(centered), blocksize=256)
        same = q2.numpy() == qcodes
        bump("nested 8-bit codes", same.sum(), qcodes.size)
        if not same.all():
            # bnb-CPU's native quantize_blockwise is not always nearest; dQuantize is. Check
            # that the CUDA-semantics pick is never farther than bnb-CPU's.
            xn = (centered * (F32(1) / np.repeat(nabs, 256)[: centered.size])).astype(F32)
            d_cuda = np.abs(xn - DYN[qcodes])
            d_cpu = np.abs(xn - DYN[q2.numpy()])
            assert (d_cuda[~same] <= d_cpu[~same]).all(), name
        assert np.array_equal(st2.absmax.numpy(), nabs), name
        # and the full bnb-CPU pipeline's offset
        _, stn = F.quantize_4bit(t, blocksize=bs, quant_type=qt, compress_statistics=True)
        assert stn.offset.numpy().astype(F32) == offset, name
        rebuilt = ((DYN[qcodes] * np.repeat(nabs, 256)[: qcodes.size]).astype(F32) + offset).astype(F32)
        entry.update({"offset_bits": int(np.array(offset, F32).view(np.uint32)),
                      "absmax": save(f"{name}.absmax.bin", absmax),
                      "absmax_codes": save(f"{name}.absmax_codes.bin", qcodes),
                      "nested_absmax": save(f"{name}.nested_absmax.bin", nabs),
                      "absmax_rebuilt": save(f"{name}.absmax_rebuilt.bin", rebuilt)})
        absmax_for_deq = rebuilt
        state = F.QuantState(absmax=torch.tensor(qcodes), shape=torch.Size(shape),
                             code=F.get_4bit_type(qt, device="cpu"), blocksize=bs,
                             quant_type=qt, dtype=TORCH_DT[dtype],
                             offset=torch.tensor(offset),
                             state2=F.QuantState(absmax=torch.tensor(nabs), code=torch.tensor(DYN),
                                                 blocksize=256, dtype=torch.float32))
        serialized(entry, name, state)
    else:
        entry["absmax"] = save(f"{name}.absmax.bin", absmax)
        absmax_for_deq = absmax
        state = F.QuantState(absmax=torch.tensor(absmax), shape=torch.Size(shape),
                             code=F.get_4bit_type(qt, device="cpu"), blocksize=bs,
                             quant_type=qt, dtype=TORCH_DT[dtype])
        serialized(entry, name, state)

    deq32 = cuda_dequantize_4bit(packed, absmax_for_deq, n, bs, qt)
    # bnb-CPU dequant (its code table) agrees except for FP4 code 8 (+0 vs CUDA's -0).
    deq_cpu = F.dequantize_4bit(torch.tensor(packed).reshape(-1, 1),
                                F.QuantState(absmax=torch.tensor(absmax_for_deq),
                                             shape=torch.Size(shape), dtype=torch.float32,
                                             blocksize=bs, code=F.get_4bit_type(qt, device="cpu"),
                                             quant_type=qt)).reshape(-1).numpy()
    bump(f"4bit-{qt} dequant fp32 values (==)", (deq_cpu == deq32).sum(), n)
    out_dt = {"F32": "F32", "F16": "F16", "BF16": "BF16"}[dtype]
    d = torch.tensor(deq32).to(TORCH_DT[out_dt])
    deq_raw = d.numpy() if out_dt == "F32" else d.view(torch.int16).numpy().view(np.uint16)
    entry["dequant_dtype"] = out_dt
    entry["dequant"] = save(f"{name}.dequant.bin", deq_raw)
    manifest["cases"].append(entry)


def serialized(entry, name, state):
    """bitsandbytes' own packed state dict (QuantState.as_dict(packed=True)): the tensor
    names/dtypes/shapes, and the quant_state JSON bytes."""
    d = state.as_dict(packed=True)
    entry["state_dict"] = {k: {"dtype": str(v.dtype).replace("torch.", ""),
                               "shape": list(v.shape)} for k, v in d.items()}
    key = [k for k in d if k.startswith("quant_state.")][0]
    entry["quant_state_json"] = save(f"{name}.quant_state.bin", d[key].numpy().astype(np.uint8))


def case_int8(name, x64, shape, dtype):
    t, raw, _ = as_input(x64.reshape(-1), dtype)
    t16 = t.reshape(shape).to(torch.float16)
    cb, scb, _ = F.int8_vectorwise_quant(t16)
    deq = F.int8_vectorwise_dequant(cb, scb).numpy().astype(F32)
    manifest["cases"].append({
        "name": name, "kind": "int8", "dtype": dtype, "shape": list(shape),
        "source": "bitsandbytes int8_vectorwise_quant (CPU/default backend)",
        "input": save(f"{name}.input.bin", raw),
        "weight": save(f"{name}.weight.bin", cb.numpy().astype(np.int8)),
        "scb": save(f"{name}.scb.bin", scb.numpy().astype(F32)),
        "dequant_f32": save(f"{name}.dequant_f32.bin", deq)})


def hf_layouts():
    """transformers' own quantized save_pretrained() of tiny random models (CPU): which
    tensors it quantizes, the state-dict names/dtypes/shapes, the quant_state JSON and
    config.json's quantization_config. Needs `pip install transformers safetensors
    accelerate`; skipped without them."""
    try:
        import tempfile
        from safetensors import safe_open
        from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig
    except ImportError:
        print("transformers not installed: hf_layout cases skipped", file=sys.stderr)
        return
    manifest["transformers"] = __import__("transformers").__version__
    llama = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=256, tie_word_embeddings=False)
    gpt2 = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=256, n_positions=64)
    cases = [
        ("hf_llama_nf4_dq", "llama", llama,
         BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                            bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)),
        ("hf_gpt2_fp4", "gpt2", gpt2,
         BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4")),
        ("hf_llama_int8", "llama", llama, BitsAndBytesConfig(load_in_8bit=True)),
        ("hf_gpt2_int8", "gpt2", gpt2, BitsAndBytesConfig(load_in_8bit=True)),
    ]

    def tensors(path):
        out = {}
        with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                e = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)}
                if ".quant_state." in k:
                    e["json"] = bytes(t.numpy().tolist()).decode()
                out[k] = e
        return out

    layouts = []
    for name, arch, kw, qconf in cases:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch, **kw), dtype=torch.float16)
        src_dir, dst_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
        model.save_pretrained(src_dir)
        q = AutoModelForCausalLM.from_pretrained(src_dir, quantization_config=qconf,
                                                 dtype=torch.float16, device_map="cpu")
        q.save_pretrained(dst_dir)
        cfg = json.load(open(os.path.join(dst_dir, "config.json")))
        layouts.append({"name": name, "model_type": arch, "torch_dtype": "float16",
                        "quantization_config": cfg["quantization_config"],
                        "memory_footprint_params": q.get_memory_footprint(return_buffers=False),
                        "source": tensors(src_dir), "quantized": tensors(dst_dir)})
    with open(os.path.join(OUT, "hf_layouts.json"), "w") as f:
        json.dump(layouts, f, indent=0)
    manifest["hf_layouts"] = "hf_layouts.json"


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    rng = np.random.default_rng(20261125)

    manifest["dynamic_map"] = save("dynamic_map.bin", DYN)
    manifest["nf4_quant_map"] = save("nf4_quant_map.bin", NF4)
    manifest["fp4_quant_map"] = save("fp4_quant_map.bin", FP4)

    # Every blocksize, odd length with a tail block, both types, fp16.
    for bs in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        n = 2 * bs + 37
        x = rng.standard_normal(n) * 0.02
        for qt in ("nf4", "fp4"):
            case_4bit(f"{qt}_bs{bs}_f16_tail", x, (n,), "F16", qt, bs)

    # Input dtypes and shapes.
    for dtype in ("F32", "F16", "BF16"):
        for qt in ("nf4", "fp4"):
            x = rng.standard_normal(17 * 33) * 0.5
            case_4bit(f"{qt}_17x33_{dtype.lower()}", x, (17, 33), dtype, qt, 64)
            x = rng.standard_normal(64 * 128) * 3.0
            case_4bit(f"{qt}_64x128_{dtype.lower()}_bs128", x, (64, 128), dtype, qt, 128)

    # All-zero blocks (middle and tail), -0.0, subnormal fp16 values, big magnitudes.
    x = rng.standard_normal(64 * 5 + 10)
    x[64:128] = 0.0
    x[320:] = 0.0
    x[5] = -0.0
    x[200:210] = 1e-7             # fp16 subnormals
    x[230] = 60000.0
    for qt in ("nf4", "fp4"):
        case_4bit(f"{qt}_zero_blocks_f16", x, (x.size,), "F16", qt, 64)
        case_4bit(f"{qt}_zero_blocks_f32", x, (x.size,), "F32", qt, 64)

    # Strict '>' at the thresholds: absmax 1.0 makes x_n == x exactly (fp32 input).
    thr = [0.03979014977812767, 0.3893125355243683, 0.6427869200706482, 0.8614784181118011,
           0.5016634166240692, 0.2035212516784668, 0.2920137718319893, 0.1202552504837513,
           -0.33967943489551544, -0.13791173323988914, -0.045525018125772476,
           -0.23460740596055984, -0.6106329262256622, -0.4599952697753906,
           -0.8480964004993439, 0.29166667, 0.583333, 0.8333333, 0.4166667, 0.0859375,
           0.20833333, 0.00260417, -0.29166667, -0.583333, -0.00260417]
    vals = [1.0]
    for t in thr:
        f = f32_literal(t)
        vals += [f, np.nextafter(f, F32(np.inf)), np.nextafter(f, F32(-np.inf))]
    vals += [0.0, -0.0, -1.0]
    x = np.array(vals, dtype=np.float64)
    x = np.concatenate([x, np.zeros(128 - x.size)])
    x[64] = 1.0                    # second block: absmax 1 too
    x[65:65 + 31] = x[1:32]
    for qt in ("nf4", "fp4"):
        case_4bit(f"{qt}_thresholds_f32", x, (x.size,), "F32", qt, 64)

    # Double quant: several nested blocks with a tail, every dtype.
    for qt, dtype, shape, bs in (("nf4", "F16", (96, 200), 64), ("fp4", "BF16", (33, 100), 32),
                                 ("nf4", "F32", (300, 31), 32), ("nf4", "BF16", (64, 640), 64)):
        x = rng.standard_normal(shape[0] * shape[1]) * rng.uniform(0.01, 0.2, shape[0]).repeat(shape[1])
        case_4bit(f"{qt}_{shape[0]}x{shape[1]}_{dtype.lower()}_bs{bs}_dq", x, shape, dtype, qt, bs,
                  nested=True)

    # int8 rows: outliers, an all-zero row, every dtype.
    x = rng.standard_normal(16 * 100) * 0.1
    x[5 * 100 + 7] = 25.0
    x[9 * 100 + 50] = -40.0
    x[3 * 100:4 * 100] = 0.0
    case_int8("int8_16x100_f16", x, (16, 100), "F16")
    case_int8("int8_7x33_bf16", rng.standard_normal(7 * 33), (7, 33), "BF16")
    case_int8("int8_5x64_f32", rng.standard_normal(5 * 64) * 3, (5, 64), "F32")

    # fp16 / bf16 conversions (torch, RNE) of awkward fp32 values.
    specials = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e9, -1e9, 6.1e-5, 5.96e-8,
                         2.98e-8, 2.99e-8, 1e-10, np.inf, -np.inf, 1.0 + 2 ** -11,
                         1.0 + 3 * 2 ** -11, 3.4e38], dtype=F32)
    conv = np.concatenate([specials, rng.standard_normal(2000).astype(F32) *
                           np.exp2(rng.integers(-30, 20, 2000)).astype(F32)]).astype(F32)
    tc = torch.tensor(conv)
    manifest["conversions"] = {
        "f32": save("conv.f32.bin", conv),
        "f16": save("conv.f16.bin", tc.to(torch.float16).view(torch.int16).numpy().view(np.uint16)),
        "bf16": save("conv.bf16.bin", tc.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)),
    }

    hf_layouts()

    manifest["agreement_with_bnb_cpu"] = {k: f"{a}/{t}" for k, (a, t) in stats.items()}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    for k, (a, t) in stats.items():
        print(f"{k}: {a}/{t} agree")
    print(f"wrote {len(manifest['cases'])} cases, {total_bytes} bytes of arrays to {OUT}")


if __name__ == "__main__":
    main()
