#!/usr/bin/env python3
"""Step (b) of scripts/gpu-check: loadstar's quantization bytes vs bitsandbytes' CUDA kernels.

The first test of the product's claim "bit-exact with bitsandbytes' CUDA kernels" (SPEC §6):
the same inputs go through bitsandbytes.functional.quantize_4bit (nf4/fp4 x blocksizes x
fp16/bf16/fp32, with and without double quant) and int8_vectorwise_quant on the GPU, and
through loadstar's GPU kernels and CPU path (the quant_dump binary); every output is
compared byte for byte with bitsandbytes' (packed codes, absmax, nested codes, nested
absmax, offset; int8 rows and row stats).

Usage: bnb_compare.py --quant-dump BIN --work DIR --gpus N [--harness-self-test]
--harness-self-test runs bitsandbytes on the CPU instead and compares with loadstar's CPU
bytes only: a check of this script on a machine without a GPU, not of the claim (the
CPU backend of bitsandbytes is not its CUDA kernels).
Exit status: 0 all equal, 1 a difference or an error, 3 skipped: no GPU (N == 0, or no
CUDA device in torch while none is expected). Prints one line per case and a summary line.
Inputs with NaN/Inf/subnormals are compared too, but reported as informational: where
bitsandbytes and loadstar differ on them is a finding, not a failed claim (SPEC §6 states
finite-input semantics).
"""
import argparse
import os
import random
import struct
import subprocess
import sys

SKIPPED = 3
BLOCKSIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096]
SHAPE = (19, 1337)  # 25403 elements: odd, a tail block at every blocksize


def skip(reason):
    print(f"skipped: no GPU ({reason})")
    sys.exit(SKIPPED)


def make_inputs(special):
    """fp32 values of the test tensor (flattened), made without torch or numpy so the CPU
    half (quant_dump) also runs where neither is installed (the dry run)."""
    rng = random.Random(4321 if special else 1234)
    flat = [rng.gauss(0.0, 1.0) for _ in range(SHAPE[0] * SHAPE[1])]
    for i in range(0, len(flat), 17):
        flat[i] = 0.0
    for i in range(5, len(flat), 29):
        flat[i] = -0.0
    flat[4096:8192] = [0.0] * 4096  # an all-zero block at every blocksize <= 4096
    for i in range(100, 140):
        flat[i] *= 1000.0  # large magnitudes in one block
    if special:
        flat[8200] = float("inf")
        flat[8300] = float("-inf")
        flat[8400] = float("nan")
        flat[9000:9100] = [1e-41] * 100  # fp32 subnormals (kept by bf16, 0 in fp16)
        flat[12000:12064] = [3e-6] * 64  # fp16 subnormal range
    return flat


def encode(values, dtype_name):
    """Little-endian bytes of `values` as F32 / F16 / BF16, each one RNE rounding from fp32
    (what torch's .to() does)."""
    f32 = struct.pack(f"<{len(values)}f", *values)
    if dtype_name == "F32":
        return f32
    if dtype_name == "F16":
        return struct.pack(f"<{len(values)}e", *struct.unpack(f"<{len(values)}f", f32))
    out = bytearray()
    for (u,) in struct.iter_unpack("<I", f32):
        if (u & 0x7FFFFFFF) > 0x7F800000:
            b = (u >> 16) | 0x40
        else:
            b = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        out += struct.pack("<H", b & 0xFFFF)
    return bytes(out)


def tensor_bytes(t):
    import torch
    return t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes()


def differences(want, got, sections):
    """None when equal; else, per differing section, how many elements differ and the
    first one, e.g. "packed: 3 of 12702 differ, first [2048]; absmax: same"."""
    if want == got:
        return None
    if len(want) != len(got):
        return f"length {len(got)} != bitsandbytes' {len(want)}"
    parts, start = [], 0
    for name, size, width in sections:
        a, b = want[start:start + size], got[start:start + size]
        start += size
        bad = [i for i in range(0, size, width) if a[i:i + width] != b[i:i + width]]
        if bad:
            parts.append(f"{name}: {len(bad)} of {size // width} differ, first [{bad[0] // width}]")
        else:
            parts.append(f"{name}: same")
    return "; ".join(parts)


def run(quant_dump, dtype_name, data, out_dir, int8):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "input.bin")
    with open(path, "wb") as f:
        f.write(data)
    cmd = [quant_dump, "--in", path, "--dtype", dtype_name, "--shape",
           f"{SHAPE[0]},{SHAPE[1]}", "--out", out_dir] + (["--int8"] if int8 else [])
    # gpu-check runs Python with the machine's own library path (torch must load its own
    # CUDA runtime) and passes the bundle's in LOADSTAR_LD_LIBRARY_PATH for quant_dump.
    env = dict(os.environ)
    if os.environ.get("LOADSTAR_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["LOADSTAR_LD_LIBRARY_PATH"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        print(f"FAIL: quant_dump exit {done.returncode}: {done.stderr.strip()}")
        sys.exit(1)


def sync(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bnb_4bit(F, torch, x, quant_type, blocksize, double_quant):
    """bitsandbytes' bytes in quant_dump's layout, and the sections for error messages."""
    packed, st = F.quantize_4bit(x, blocksize=blocksize, compress_statistics=bool(double_quant),
                                 quant_type=quant_type)
    sync(torch)
    sections = [("packed", packed.numel(), 1)]
    want = tensor_bytes(packed)
    if double_quant:
        want += tensor_bytes(st.absmax) + tensor_bytes(st.state2.absmax.float())
        want += tensor_bytes(st.offset.float().reshape(1))
        sections += [("absmax codes", st.absmax.numel(), 1),
                     ("nested absmax", 4 * st.state2.absmax.numel(), 4), ("offset", 4, 4)]
    else:
        want += tensor_bytes(st.absmax.float())
        sections += [("absmax", 4 * st.absmax.numel(), 4)]
    return want, sections


def bnb_int8(F, torch, x):
    q, stats, _ = F.int8_vectorwise_quant(x, threshold=0.0)
    sync(torch)
    return (tensor_bytes(q) + tensor_bytes(stats.float()),
            [("int8", q.numel(), 1), ("row stats", 4 * stats.numel(), 4)])


def read(path):
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant-dump", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--gpus", type=int, required=True)
    ap.add_argument("--harness-self-test", action="store_true")
    args = ap.parse_args()
    self_test = args.harness_self_test

    # loadstar's bytes first (CPU always; GPU when quant_dump finds one).
    inputs = {}
    for special in (False, True):
        flat = make_inputs(special)
        for dname in ("F16", "BF16", "F32"):
            data = encode(flat, dname)
            out_dir = os.path.join(args.work, ("special_" if special else "") + dname)
            run(args.quant_dump, dname, data, out_dir, int8=(dname == "F16"))
            inputs[(special, dname)] = (data, out_dir)

    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means no reference here
        if args.gpus == 0:
            skip(f"torch not importable: {e}")
        print(f"FAIL: torch not importable on a GPU machine: {e}")
        return 1
    if not torch.cuda.is_available() and not self_test:
        if args.gpus == 0:
            skip("torch.cuda.is_available() is False")
        print(f"FAIL: nvidia-smi lists {args.gpus} GPU(s) but torch sees none")
        return 1
    try:
        import bitsandbytes
        import bitsandbytes.functional as F
        from bitsandbytes import cextension
    except Exception as e:  # noqa: BLE001
        print(f"FAIL: bitsandbytes not importable: {e}")
        return 1
    # Without its CUDA library bitsandbytes still answers, from torch fallbacks: that would
    # compare loadstar with the wrong reference. (It picks the library of torch's CUDA
    # version, or the nearest of the same major.)
    native = getattr(getattr(cextension, "lib", None), "_lib", None)
    if type(getattr(cextension, "lib", None)).__name__ != "CudaBNBNativeLibrary" and not self_test:
        print(f"FAIL: bitsandbytes' CUDA library did not load ({type(cextension.lib).__name__}); "
              "see the log above")
        return 1
    device = "cpu" if self_test else "cuda"
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), bitsandbytes "
          f"{bitsandbytes.__version__} ({getattr(native, '_name', '?')}), "
          f"{'harness self-test on the CPU' if self_test else torch.cuda.get_device_name(0)}")

    dtypes = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
    counts = {"same": 0, "diff": 0, "refused": 0, "info_same": 0, "info_diff": 0}
    for special in (False, True):
        for dname, dt in dtypes.items():
            data, out_dir = inputs[(special, dname)]
            xg = torch.frombuffer(bytearray(data), dtype=dt).reshape(SHAPE).to(device)
            cases = []
            for qt in ("nf4", "fp4"):
                for bs in BLOCKSIZES:
                    for dq in (0, 1):
                        name = f"{qt}_{bs}_{dq}"
                        try:
                            cases.append((name, bnb_4bit(F, torch, xg, qt, bs, dq), None))
                        except Exception as e:  # noqa: BLE001 - e.g. a blocksize bnb refuses
                            cases.append((name, None, f"bitsandbytes refuses: {e}".splitlines()[0]))
            if dname == "F16":
                try:
                    cases.append(("int8", bnb_int8(F, torch, xg), None))
                except Exception as e:  # noqa: BLE001
                    cases.append(("int8", None, f"bitsandbytes refuses: {e}".splitlines()[0]))
            for name, ref, refused in cases:
                label = f"{'special ' if special else ''}{dname} {name}"
                if refused:
                    counts["refused"] += 1
                    print(f"{label}: {refused}")
                    continue
                want, sections = ref
                verdicts, ok = [], True
                for backend in ("cpu",) if self_test else ("gpu", "cpu"):
                    got = read(os.path.join(out_dir, f"{backend}_{name}.bin"))
                    d = "missing output" if got is None else differences(want, got, sections)
                    ok = ok and d is None
                    verdicts.append(f"{backend}: {'same' if d is None else '[' + d + ']'}")
                key = ("info_" if special else "") + ("same" if ok else "diff")
                counts[key] += 1
                print(f"{label}: {'; '.join(verdicts)}")

    print(f"bnb_compare: {counts['same']} cases byte-equal with bitsandbytes, {counts['diff']} "
          f"differ, {counts['refused']} refused by bitsandbytes; NaN/Inf/subnormal inputs "
          f"(informational): {counts['info_same']} equal, {counts['info_diff']} differ")
    return 0 if counts["diff"] == 0 and counts["same"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
