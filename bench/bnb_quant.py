#!/usr/bin/env python3
"""bitsandbytes' CPU quantize_4bit / int8_vectorwise_quant throughput, the peer figure for
bench_quant (SPEC §8: loadstar nf4 >= 20x bitsandbytes' CPU quantize_4bit).

  CUDA_VISIBLE_DEVICES= .venv-bnb/bin/python bench/bnb_quant.py [--rows 4096 --cols 4096]
        [--threads N] [--bench build-quant/bench/bench_quant]

Prints GB/s of fp16 input (wall and per CPU-second) for nf4/fp4 (blocksize 64) and int8.
With --bench it also runs bench_quant on the same tensor size and prints the ratio.
"""
import argparse
import os
import re
import subprocess
import time

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
import torch  # noqa: E402

torch.set_default_device("cpu")
import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402


def measure(fn, reps):
    best = None
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), time.process_time()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, c1 - c0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--bench", help="path of bench_quant to run on the same size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w = (torch.randn(args.rows, args.cols) * 0.02).to(torch.float16)
    nbytes = w.numel() * 2
    print(f"bitsandbytes {bnb.__version__}, torch {torch.__version__}, "
          f"{args.threads} thread(s), fp16 {args.rows}x{args.cols}")
    figures = {}
    for name, fn in (
        ("nf4 quantize_4bit bs64", lambda: F.quantize_4bit(w, blocksize=64, quant_type="nf4")),
        ("fp4 quantize_4bit bs64", lambda: F.quantize_4bit(w, blocksize=64, quant_type="fp4")),
        ("nf4 quantize_4bit bs64 +dq", lambda: F.quantize_4bit(w, blocksize=64, quant_type="nf4",
                                                               compress_statistics=True)),
        ("int8_vectorwise_quant", lambda: F.int8_vectorwise_quant(w)),
    ):
        fn()  # warm up
        wall, cpu = measure(fn, args.reps)
        figures[name] = nbytes / cpu / 1e9
        print(f"{name:30s} wall {nbytes / wall / 1e9:7.3f} GB/s   per CPU-s {nbytes / cpu / 1e9:7.3f} GB/s")
    bnb_nf4 = figures["nf4 quantize_4bit bs64"]
    print(f"BNB_NF4_GBPS_PER_CPU_SECOND={bnb_nf4:.4f}")
    if args.bench:
        out = subprocess.run([args.bench, "--rows", str(args.rows), "--cols", str(args.cols),
                              "--bnb-gbps", f"{bnb_nf4:.4f}"], capture_output=True, text=True,
                             check=True).stdout
        print(out)
        m = re.search(r"nf4 quantize, 1 thread: ([0-9.]+) GB/s", out)
        if m:
            print(f"loadstar nf4 / bitsandbytes CPU nf4 (per CPU-second): "
                  f"{float(m.group(1)) / bnb_nf4:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
