#!/usr/bin/env python3
"""Loads one checkpoint with loadstar and with its peers, warm and cold, interleaved.

Peers (from PyPI, installed into a venv under <data>/venv on first use):
  runai-model-streamer   SafetensorsStreamer().stream_files
  fastsafetensors        fastsafe_open(..., nogds=True, device="cpu")
  safetensors            safetensors.torch.load_file
Every tool ends with every tensor materialised in memory it owns (the streamers hand out
views of buffers they reuse or free, and safetensors' load_file views of an mmap that is
read lazily, so their tensors are cloned, as a caller keeping the model must); loadstar
ends with the model in a host device's fresh shared memory (`loadstar load --devices
host:1`), checksums verified. None of the peers verifies checksums. Every load is a fresh
process into fresh memory: nobody reuses memory here.

The checkpoint: a Llama-shaped fp16 safetensors file of --gib GiB (random values) made
under <data>/peers-<gib>g/ with numpy, and saved into <data>/peers-<gib>g/store with
`loadstar store save`; both are reused when present.

Each round runs, in order, the fresh-memory limit and then every tool, warm then cold.
Before every measurement (the limit included) the same two steps run:
  1. page cache: cold = the files the tool reads are evicted (fdatasync +
     posix_fadvise(DONTNEED) per file, which works unprivileged; no global drop_caches,
     which would also evict the other files of the machine and vary by who runs what);
     warm = the files are read once in full, so they are all in the page cache.
  2. memory state: a fresh process touches --condition-gib GiB of new anonymous memory
     (default: the checkpoint's size plus 1 GiB) and exits, and the measurement starts
     at once. Why: this VM hands freed memory back to the hypervisor (free page reporting,
     in passes every 2 s that take a share of the free memory each), and touching a page
     the host took back costs several times more than touching one it still backs. How
     long ago, and how much, memory was freed before a load therefore set its speed:
     measured on a quiet machine, the same warm loadstar load took 2.9-3.1 s right after
     4 GiB were freed, 3.8-4.5 s 13 s after, 4.3-6.4 s when nothing had been freed for
     minutes; a pause of a few seconds does not even it out (reporting takes tens of
     seconds to go through 4 GiB). Right after the conditioning process exits, the free
     lists start with the pages it just touched (the allocator hands out recently freed
     pages first and files reported ones behind them), so every measurement fills memory
     the host still backs: the same state for every tool, and the one a loader on a busy
     machine meets. --settle adds a pause after it (default 0).

The fresh-memory limit of a round: a fresh Python process maps new memory of the
checkpoint's size and fills it from a pre-faulted 64 MiB buffer with one thread per core
(numpy copies and madvise release the GIL), three ways, each in its own process after
the same two steps as a tool: (1) memcpy into anonymous private memory (what torch's
allocator gets: 4 KiB pages, one minor fault each, as the peers' fault counts show; the
peers' kind), (2) memcpy into a new memfd mapped shared (4 KiB shmem pages faulted one
by one, for comparison), (3) the same memfd filled piece by piece, each 64 MiB piece's
pages allocated first with MADV_POPULATE_WRITE, then copied: loadstar's kind (a host
device's fresh shm is filled so, chunk by chunk; populating in one call is cheaper than
a fault per page). Each tool's ratio is to the limit of its kind.

The tool order rotates by one each round (round r starts with tool r), so that whatever
the conditioning leaves uneven does not fall on the same tool every round.

Reported per tool: GB/s (bytes / load seconds, the tool's own timer: Python's around the
load, loadstar's JSON `seconds`), CPU seconds, and minor / major page faults. For the
Python peers, CPU and faults are taken around the load inside the process
(resource.getrusage(RUSAGE_SELF) deltas), so the ~3 s of importing torch is not counted;
for loadstar (a C++ binary whose start-up is a few ms) they are the whole process's, from
os.wait4. A JSON summary goes to --json (default <data>/peers.json).

Usage: python3 bench/peers.py [--data bench/data] [--loadstar build/deploy/loadstar]
                              [--gib 1.5] [--runs 3] [--modes warm,cold] [--tools ...]
                              [--condition-gib G] [--settle 0] [--json PATH]
The defaults finish in about 6 minutes on the 2-core VM (venv already installed; 0.5 GiB
with --runs 2 took 94 s).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PEER_PACKAGES = ["runai-model-streamer", "fastsafetensors", "safetensors", "torch", "numpy"]
TOOLS = ["loadstar", "runai", "fastsafetensors", "safetensors"]
MODEL = "peers-llama"


def rusage_delta(before, after):
    return {"cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "minflt": after.ru_minflt - before.ru_minflt,
            "majflt": after.ru_majflt - before.ru_majflt}


# --- worker side: runs inside the venv, one load per process -----------------------------

def worker(tool, path):
    import resource

    import torch  # noqa: F401  (imported before the clock starts)

    tensors = {}
    r0 = resource.getrusage(resource.RUSAGE_SELF)
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
    usage = rusage_delta(r0, resource.getrusage(resource.RUSAGE_SELF))
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    print(json.dumps({"tool": tool, "bytes": nbytes, "seconds": seconds,
                      "tensors": len(tensors), "usage": usage}))


MADV_POPULATE_WRITE = 23  # Linux >= 5.14; Python's mmap module may not name it
FRESH_KINDS = ("anon", "shm", "shm_populate")


def fresh_memory(nbytes, kind):
    """Copies into newly mapped memory of one kind; prints GB/s and faults."""
    import ctypes
    import mmap
    import resource
    import threading

    import numpy as np

    threads = os.cpu_count() or 1
    piece = 64 << 20
    src = np.ones(piece, dtype=np.uint8)
    fd = -1
    if kind == "anon":
        # No MADV_HUGEPAGE: torch's CPU allocator does not ask for huge pages (the
        # peers take one minor fault per 4 KiB, as this copy does); THP is "madvise"
        # here, and asking for it made this copy 2-3x slower (2 MiB zeroing).
        m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        fd = os.memfd_create("peers-fresh")
        os.ftruncate(fd, nbytes)
        m = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED)
    dst = np.frombuffer(m, dtype=np.uint8)
    base = dst.ctypes.data
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def copy(t):
        # Thread t copies every threads-th 64 MiB piece (numpy and madvise drop the GIL).
        for off in range(t * piece, nbytes, threads * piece):
            n = min(piece, nbytes - off)
            if kind == "shm_populate":
                # As a host device fills fresh memory: allocate the piece's pages in one
                # call, then copy. Through ctypes, which drops the GIL (mmap.madvise
                # holds it, which would serialize the threads' populates).
                if libc.madvise(ctypes.c_void_p(base + off), ctypes.c_size_t(n),
                                MADV_POPULATE_WRITE) != 0:
                    raise OSError(ctypes.get_errno(), "madvise(MADV_POPULATE_WRITE)")
            dst[off:off + n] = src[:n]

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    pool = [threading.Thread(target=copy, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    seconds = time.perf_counter() - start
    usage = rusage_delta(r0, resource.getrusage(resource.RUSAGE_SELF))
    print(json.dumps({"threads": threads, "kind": kind, "gbps": nbytes / seconds / 1e9,
                      "seconds": seconds, "usage": usage}))


# --- driver side ------------------------------------------------------------------------

def ensure_venv(venv):
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    probe = [python, "-c", "import torch, numpy, safetensors, fastsafetensors, "
             "runai_model_streamer"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                       check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet"] + PEER_PACKAGES,
                       check=True)
    return python


MAKE_CHECKPOINT = r"""
import json, sys
import numpy as np
from safetensors.numpy import save_file
path, cfg_path, gib = sys.argv[1], sys.argv[2], float(sys.argv[3])
h, ffn, vocab = 2048, 5504, 32000
per_layer = (4 * h * h + 3 * h * ffn + 2 * h) * 2
fixed = (2 * vocab * h + h) * 2
layers = max(1, int((gib * 2**30 - fixed + per_layer - 1) // per_layer))
rng = np.random.default_rng(0)
def w(*shape):
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
t = {"model.embed_tokens.weight": w(vocab, h)}
for i in range(layers):
    p = f"model.layers.{i}."
    t[p + "input_layernorm.weight"] = w(h)
    for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
        t[p + f"self_attn.{m}.weight"] = w(h, h)
    t[p + "post_attention_layernorm.weight"] = w(h)
    t[p + "mlp.gate_proj.weight"] = w(ffn, h)
    t[p + "mlp.up_proj.weight"] = w(ffn, h)
    t[p + "mlp.down_proj.weight"] = w(h, ffn)
t["model.norm.weight"] = w(h)
t["lm_head.weight"] = w(vocab, h)
save_file(t, path, metadata={"format": "pt"})
json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": h,
           "intermediate_size": ffn, "num_hidden_layers": layers,
           "num_attention_heads": 16, "vocab_size": vocab, "torch_dtype": "float16"},
          open(cfg_path, "w"))
"""


def ensure_checkpoint(python, loadstar, base, gib):
    ckpt_dir = os.path.join(base, "ckpt")
    ckpt = os.path.join(ckpt_dir, "model.safetensors")
    store = os.path.join(base, "store")
    if not os.path.exists(ckpt):
        os.makedirs(ckpt_dir, exist_ok=True)
        print(f"writing a {gib} GiB fp16 checkpoint to {ckpt} ...", flush=True)
        subprocess.run([python, "-c", MAKE_CHECKPOINT, ckpt + ".tmp",
                        os.path.join(ckpt_dir, "config.json"), str(gib)], check=True)
        os.rename(ckpt + ".tmp", ckpt)
    model_dir = os.path.join(store, MODEL)
    if not os.path.exists(os.path.join(model_dir, "manifest.json")):
        subprocess.run([loadstar, "store", "save", ckpt_dir, "--name", MODEL, "--store",
                        store, "--overwrite"], check=True, capture_output=True)
    files = sorted(os.path.join(model_dir, f) for f in os.listdir(model_dir)
                   if f.startswith("data-"))
    return ckpt, store, files


def drop_page_cache(paths):
    """Evicts the files' clean pages (unprivileged; only these files)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_page_cache(paths):
    for path in paths:
        with open(path, "rb") as f:
            while f.read(64 << 20):
                pass


def condition_memory(nbytes):
    """Touches nbytes of new anonymous memory (in the process that runs this) and exits."""
    import ctypes
    import mmap

    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    if libc.madvise(ctypes.c_void_p(base), ctypes.c_size_t(nbytes), MADV_POPULATE_WRITE) != 0:
        raise OSError(ctypes.get_errno(), "madvise(MADV_POPULATE_WRITE)")
    print(json.dumps({"conditioned_bytes": nbytes}))


def prepare(files, mode, args):
    """The same steps before every measurement (see the module comment)."""
    if mode == "cold":
        drop_page_cache(files)
    elif mode == "warm":
        warm_page_cache(files)
    if args.condition_bytes > 0:
        run_child([sys.executable, os.path.abspath(__file__), "--condition",
                   str(args.condition_bytes)])
    time.sleep(args.settle)


def run_child(cmd):
    """Runs `cmd`; returns its last stdout line as JSON and its rusage (from os.wait4)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read().decode()
        proc.stdout.close()
        # Reap it ourselves: wait4 gives the child's own rusage (Popen.wait does not).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): "
                             f"{err.read().decode(errors='replace').strip()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage


def whole_process_usage(usage):
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "minflt": usage.ru_minflt,
            "majflt": usage.ru_majflt}


def run_once(tool, mode, args, python, ckpt, store, store_files):
    files = store_files if tool == "loadstar" else [ckpt]
    prepare(files, mode, args)
    if tool == "loadstar":
        cmd = [args.loadstar, "load", MODEL, "--store", store, "--devices", "host:1",
               "-o", "json"] + (["--cold"] if mode == "cold" else [])
    else:
        cmd = [python, os.path.abspath(__file__), "--worker", tool, ckpt]
    result, usage = run_child(cmd)
    if tool == "loadstar":
        result["usage"] = whole_process_usage(usage)
        result["usage_scope"] = "whole process (wait4)"
    else:
        result["usage_scope"] = "around the load (getrusage delta)"
    result["gbps"] = result["bytes"] / result["seconds"] / 1e9
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="bench/data")
    parser.add_argument("--loadstar", default="build/deploy/loadstar")
    parser.add_argument("--gib", type=float, default=1.5,
                        help="checkpoint size (default 1.5: the run fits in 10 minutes)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="warm,cold")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--condition-gib", type=float,
                        help="GiB of memory touched and freed before every measurement "
                             "(default: checkpoint size + 1; 0 = none)")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds of pause before every measurement, after conditioning")
    parser.add_argument("--json", help="summary path (default <data>/peers.json)")
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--condition", type=int, metavar="BYTES", help=argparse.SUPPRESS)
    parser.add_argument("--fresh-memory", nargs=2, metavar=("BYTES", "KIND"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if args.condition:
        condition_memory(args.condition)
        return
    if args.fresh_memory:
        fresh_memory(int(args.fresh_memory[0]), args.fresh_memory[1])
        return
    for m in args.modes.split(","):
        if m not in ("warm", "cold"):
            raise SystemExit(f"--modes: unknown mode {m!r} (warm, cold)")
    for t in args.tools.split(","):
        if t not in TOOLS:
            raise SystemExit(f"--tools: unknown tool {t!r} ({', '.join(TOOLS)})")
    if not os.access(args.loadstar, os.X_OK):
        raise SystemExit(f"--loadstar {args.loadstar}: not an executable (build loadstar)")

    started = time.time()
    data = os.path.abspath(args.data)
    python = ensure_venv(os.path.join(data, "venv"))
    ckpt, store, store_files = ensure_checkpoint(
        python, os.path.abspath(args.loadstar), os.path.join(data, f"peers-{args.gib:g}g"),
        args.gib)
    nbytes = os.path.getsize(ckpt)
    condition_gib = args.condition_gib if args.condition_gib is not None else nbytes / 2**30 + 1
    args.condition_bytes = int(condition_gib * 2**30)
    tools = args.tools.split(",")
    modes = args.modes.split(",")

    results = {(t, m): [] for t in tools for m in modes}
    limits = []
    for r in range(args.runs):
        limit = {}
        for kind in FRESH_KINDS:
            # Each kind in its own process after the same steps as every tool.
            prepare([], "none", args)
            one, _ = run_child([python, os.path.abspath(__file__), "--fresh-memory",
                                str(nbytes), kind])
            limit["threads"] = one["threads"]
            limit[kind] = one
        limits.append(limit)
        print(f"round {r + 1} fresh-memory limit ({limit['threads']} threads): anon "
              f"{limit['anon']['gbps']:5.2f} GB/s, shm memcpy {limit['shm']['gbps']:5.2f} "
              f"GB/s, shm populated {limit['shm_populate']['gbps']:5.2f} GB/s", flush=True)
        # Each round starts with the next tool, so that what the conditioning leaves
        # uneven (the reporting pass it triggers) does not always fall on the same one.
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for mode in modes:
            for tool in order:
                res = run_once(tool, mode, args, python, ckpt, store, store_files)
                results[(tool, mode)].append(res)
                u = res["usage"]
                print(f"round {r + 1} {mode:4} {tool:16} {res['seconds']:6.2f} s "
                      f"{res['gbps']:6.2f} GB/s  cpu {u['cpu_s']:5.2f} s  "
                      f"minflt {u['minflt']:8d}  majflt {u['majflt']:6d}", flush=True)

    def med(values):
        return statistics.median(values) if values else 0.0

    anon = med([x["anon"]["gbps"] for x in limits])
    shm = med([x["shm"]["gbps"] for x in limits])
    shm_populate = med([x["shm_populate"]["gbps"] for x in limits])
    print(f"\nfresh-memory limit (median of {args.runs}): anon memcpy {anon:.2f} GB/s, "
          f"shm memcpy {shm:.2f} GB/s, shm populated {shm_populate:.2f} GB/s")
    print("median GB/s (range), loadstar / peer, tool / its fresh-memory limit, CPU s, faults")
    summary = {"bytes": nbytes, "gib": args.gib, "runs": args.runs, "settle_s": args.settle,
               "condition_bytes": args.condition_bytes,
               "fresh_memory_limit": {"anon_gbps": anon, "shm_gbps": shm,
                                      "shm_populate_gbps": shm_populate, "rounds": limits},
               "tools": {}}
    for mode in modes:
        ours = med([x["gbps"] for x in results.get(("loadstar", mode), [])])
        for tool in tools:
            runs = results[(tool, mode)]
            g = [x["gbps"] for x in runs]
            m = med(g)
            # loadstar fills its host device's fresh shm piece by piece, populated then
            # written (MADV_POPULATE_WRITE, then the read or memcpy): "shm populated".
            limit = shm_populate if tool == "loadstar" else anon
            entry = {"median_gbps": m, "gbps": g,
                     "ratio_loadstar_over_tool": ours / m if m and tool != "loadstar" else None,
                     "ratio_to_fresh_memory_limit": m / limit if limit else None,
                     "fresh_memory_kind": "shm_populate" if tool == "loadstar" else "anon",
                     "median_cpu_s": med([x["usage"]["cpu_s"] for x in runs]),
                     "median_minflt": med([x["usage"]["minflt"] for x in runs]),
                     "median_majflt": med([x["usage"]["majflt"] for x in runs]),
                     "usage_scope": runs[0]["usage_scope"] if runs else ""}
            summary["tools"][f"{mode}/{tool}"] = entry
            ratio = f"{ours / m:5.2f} x" if ours and m and tool != "loadstar" else "       "
            print(f"  {mode:4} {tool:16} {m:6.2f} ({min(g):.2f}-{max(g):.2f})  {ratio}  "
                  f"{entry['ratio_to_fresh_memory_limit']:.2f} x limit  "
                  f"cpu {entry['median_cpu_s']:5.2f}  minflt {entry['median_minflt']:.0f}  "
                  f"majflt {entry['median_majflt']:.0f}")
    summary["elapsed_s"] = time.time() - started
    path = args.json or os.path.join(data, "peers.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nsummary: {path} ({summary['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
