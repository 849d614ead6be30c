#!/usr/bin/env python3
"""Loads the bench checkpoint with loadstar and with its peers, warm and cold, interleaved.

Peers (from PyPI, installed into a venv under bench/data/venv on first use):
  runai-model-streamer   SafetensorsStreamer().stream_files
  fastsafetensors        fastsafe_open(..., nogds=True, device="cpu")
  safetensors            safetensors.torch.load_file
Every tool ends with every tensor materialised in memory it owns (the streamers hand out
views of buffers they reuse or free, and safetensors' load_file views of an mmap that is
read lazily, so their tensors are cloned, as a caller keeping the model must); loadstar
ends with the model in a host device's (fresh) shared memory, checksums verified. None of
the peers verifies checksums. Each run is a
fresh process and times only the load (not Python or torch start-up). Rounds interleave
the tools so drift on a shared machine hits all of them alike; medians are printed with
loadstar's ratio to each peer.

The checkpoint and the store are the ones bench_load makes (run it first):
  bench/data/ckpt/model.safetensors, bench/data/store (model "bench-llama").

Usage: python3 bench/peers.py [--data bench/data] [--loadstar build-loader/deploy/loadstar]
                              [--runs 3] [--modes warm,cold] [--tools ...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PEER_PACKAGES = ["runai-model-streamer", "fastsafetensors", "safetensors", "torch", "numpy"]
TOOLS = ["loadstar", "runai", "fastsafetensors", "safetensors"]


# --- worker side: runs inside the venv, one load per process -----------------------------

def worker(tool, path):
    import torch  # noqa: F401  (imported before the clock starts)

    tensors = {}
    start = time.perf_counter()
    if tool == "runai":
        from runai_model_streamer import SafetensorsStreamer
        with SafetensorsStreamer() as streamer:
            streamer.stream_files([path])
            for name, tensor in streamer.get_tensors():
                tensors[name] = tensor.clone()
    elif tool == "fastsafetensors":
        from fastsafetensors import fastsafe_open
        with fastsafe_open(filenames=[path], nogds=True, device="cpu") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name).clone()
    elif tool == "safetensors":
        from safetensors.torch import load_file
        # load_file on CPU returns tensors backed by its mmap of the file: nothing is read
        # until touched. Cloning reads every byte into memory the caller owns.
        tensors = {name: t.clone() for name, t in load_file(path, device="cpu").items()}
    else:
        raise SystemExit(f"unknown tool {tool}")
    seconds = time.perf_counter() - start
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    print(json.dumps({"tool": tool, "bytes": nbytes, "seconds": seconds,
                      "tensors": len(tensors)}))


# --- driver side ------------------------------------------------------------------------

def ensure_venv(venv):
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    probe = [python, "-c", "import torch, safetensors, fastsafetensors, runai_model_streamer"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                       check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet"] + PEER_PACKAGES,
                       check=True)
    return python


def drop_page_cache(paths):
    """Drops the files' clean pages (works unprivileged); all caches too when root."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if os.geteuid() == 0:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")


def warm_page_cache(paths):
    for path in paths:
        with open(path, "rb") as f:
            while f.read(64 << 20):
                pass


def run_once(tool, mode, args, python, ckpt, store, store_files):
    files = store_files if tool == "loadstar" else [ckpt]
    if mode == "cold":
        drop_page_cache(files)
    else:
        warm_page_cache(files)
    if tool == "loadstar":
        cmd = [args.loadstar, "load", "bench-llama", "--store", store, "--devices", "host:1",
               "-o", "json"] + (["--cold"] if mode == "cold" else [])
    else:
        cmd = [python, os.path.abspath(__file__), "--worker", tool, ckpt]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["bytes"] / result["seconds"] / 1e9, result["seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="bench/data")
    parser.add_argument("--loadstar", default="build-loader/deploy/loadstar")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="warm,cold")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    data = os.path.abspath(args.data)
    ckpt = os.path.join(data, "ckpt", "model.safetensors")
    store = os.path.join(data, "store")
    model_dir = os.path.join(store, "bench-llama")
    if not os.path.exists(ckpt) or not os.path.isdir(model_dir):
        raise SystemExit("no bench checkpoint: run build-loader/bench/bench_load first")
    store_files = sorted(os.path.join(model_dir, f) for f in os.listdir(model_dir)
                         if f.startswith("data-"))
    python = ensure_venv(os.path.join(data, "venv"))
    tools = args.tools.split(",")
    modes = args.modes.split(",")

    results = {(t, m): [] for t in tools for m in modes}
    for r in range(args.runs):
        for mode in modes:
            for tool in tools:
                gbps, seconds = run_once(tool, mode, args, python, ckpt, store, store_files)
                results[(tool, mode)].append(gbps)
                print(f"round {r + 1} {mode:4} {tool:16} {seconds:7.2f} s  {gbps:6.2f} GB/s",
                      flush=True)

    print("\nmedian GB/s (loadstar / peer)")
    summary = {}
    for mode in modes:
        ours = statistics.median(results[("loadstar", mode)]) if "loadstar" in tools else None
        for tool in tools:
            med = statistics.median(results[(tool, mode)])
            ratio = f"{ours / med:5.2f} x" if ours and tool != "loadstar" else ""
            print(f"  {mode:4} {tool:16} {med:6.2f} GB/s  {ratio}")
            summary[f"{mode}/{tool}"] = {"median_gbps": med, "runs": results[(tool, mode)]}
    with open(os.path.join(data, "peers.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
