#!/usr/bin/env python3
"""SPEC §8 "attach": an engine's cold start to its first generated token, on CPU.

Side by side in one run, on the same OPT-125m-architecture checkpoint (random fp16
weights, scripts/make_opt_checkpoint.py), each measurement in a fresh Python process
(libraries imported first; the clock starts after the imports, whose time is reported on
its own) and timed until generate() returns the first new token:

  fp16   transformers: AutoModelForCausalLM.from_pretrained(dir, dtype=float16)
         loadstar:     loadstar.transformers.load_model(name) on a deployment with no
                       instance (the Acquire cold-starts a load from the store)
  nf4    transformers: from_pretrained(dir, quantization_config=BitsAndBytesConfig(nf4))
                       (bitsandbytes quantizes while loading)
         loadstar:     load_model on an nf4 deployment with no instance (the store holds
                       the nf4 variant: `store save --quantize nf4`)
  warm   loadstar:     load_model with the instance already loaded (fp16 and nf4), in a
                       fresh process, and again in that process (an engine that already
                       ran a model: torch's CPU kernels are initialised by then)

Memory states, each figure labelled with its own: "warm page cache" (the files were just
read: what transformers meets on a second start), and "fresh" (the checkpoint's or the
store model's files evicted from the page cache with posix_fadvise(DONTNEED) right before
the run; the worker runs with no host cache, so a cold start reads the store). Rounds
alternate the systems; the median is reported.

Usage: bench/attach.py [--rounds 3] [--out build/bench/attach.json] [--workdir DIR]
       (LOADSTAR_BIN: the loadstar binary, default build/deploy/loadstar)
Needs torch, transformers, accelerate, bitsandbytes and the loadstar package (e.g. the
venv scripts/python-env makes).
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = [2, 1000, 2000, 3000, 4000, 5000, 6000, 7000]


# ---------------------------------------------------------------- child: one measurement

def child(args):
    t_import = time.perf_counter()
    import torch
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    import loadstar
    import loadstar.transformers as lt
    import_s = time.perf_counter() - t_import
    # Pull in the lazily imported model classes too, so neither side pays them on the clock.
    transformers.OPTForCausalLM  # noqa: B018
    __import__("bitsandbytes")

    prompt = torch.tensor([PROMPT])

    def once():
        t0 = time.perf_counter()
        cold_start = None
        if args.system == "transformers":
            kwargs = {"dtype": torch.float16}
            if args.quant == "nf4":
                kwargs.update(device_map="cpu", quantization_config=BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4"))
            model = AutoModelForCausalLM.from_pretrained(args.dir, **kwargs)
        else:
            lease = loadstar.Client(args.addr).acquire(args.name)  # cold-starts if needed
            t_acquired = time.perf_counter()
            model = lt.load_model(lease)
            cold_start = lease.cold_start
        t_model = time.perf_counter()
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=1, do_sample=False)
        t1 = time.perf_counter()
        if args.system == "loadstar":
            model.loadstar_lease.release()
        return {"seconds": t1 - t0, "model_seconds": t_model - t0,
                "acquire_seconds": t_acquired - t0 if args.system == "loadstar" else 0.0,
                "first_token_seconds": t1 - t_model, "import_seconds": import_s,
                "token": int(out[0, -1]), "cold_start": cold_start}

    result = once()
    if args.again:
        # The same attach again in this process: what an engine that already ran a model
        # (torch's kernels initialised) meets.
        result["again"] = once()
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- parent: the run

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evict(path):
    """Drops `path`'s files (recursively) from the page cache."""
    for root, _, files in os.walk(path) if os.path.isdir(path) else [("", None, [path])]:
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def cat(path):
    """Reads `path`'s files (recursively) so they are in the page cache."""
    for root, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                while fh.read(16 << 20):
                    pass


class Cluster:
    def __init__(self, bin_path, workdir):
        self.bin = bin_path
        self.store = os.path.join(workdir, "store")
        self.addr = f"127.0.0.1:{free_port()}"
        self.env = dict(os.environ, LOADSTAR_ADDR=self.addr, LOADSTAR_STORE=self.store)
        self.log = open(os.path.join(workdir, "cluster.log"), "wb")
        self.proc = None

    def cli(self, *args):
        r = subprocess.run([self.bin, *args], capture_output=True, text=True, env=self.env)
        if r.returncode != 0:
            raise SystemExit(f"loadstar {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def start(self):
        self.proc = subprocess.Popen(
            [self.bin, "up", "--workers", "1", "--devices", "host:2", "--store", self.store,
             "--addr", self.addr, "--host-cache-bytes", "0", "--state", "memory"],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 30
        while subprocess.run([self.bin, "status"], capture_output=True, env=self.env).returncode:
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("the loadstar cluster did not start")
            time.sleep(0.2)

    def instances(self, name):
        import loadstar

        with loadstar.Client(self.addr) as client:
            return list(client.status(name).instances)

    def wait(self, predicate, what, timeout=120):
        deadline = time.time() + timeout
        while not predicate():
            if time.time() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def measure(py, cluster, system, quant, name=None, directory=None, again=False):
    args = [py, os.path.abspath(__file__), "--child", "--system", system, "--quant", quant]
    args += ["--again"] if again else []
    args += ["--name", name] if name else ["--dir", directory]
    args += ["--addr", cluster.addr]
    r = subprocess.run(args, capture_output=True, text=True, env=cluster.env, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{system} {quant} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(REPO, "build", "bench", "attach.json"))
    parser.add_argument("--workdir", default=os.path.join(REPO, "build", "bench", "attach"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--quant", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--addr", help=argparse.SUPPRESS)
    parser.add_argument("--again", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    bin_path = os.environ.get("LOADSTAR_BIN") or os.path.join(REPO, "build", "deploy", "loadstar")
    os.makedirs(args.workdir, exist_ok=True)
    ckpt = os.path.join(args.workdir, "opt-125m")
    if not os.path.isfile(os.path.join(ckpt, "config.json")):
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_opt_checkpoint.py"),
                        ckpt, "--preset", "opt-125m"], check=True)
    load_start = os.getloadavg()
    cluster = Cluster(bin_path, args.workdir)
    for name, flags in (("opt-fp16", []), ("opt-nf4", ["--quantize", "nf4"])):
        if not os.path.isdir(os.path.join(cluster.store, name)):
            cluster.cli("store", "save", ckpt, "--name", name, *flags)
    cluster.start()
    results = {}
    try:
        deploy_flags = {"fp16": ["--model", "opt-fp16"],
                        "nf4": ["--model", "opt-nf4", "--quantization", "nf4"]}

        mode = {}  # deployment name -> "cold" | "warm", as deployed now

        def redeploy(quant, how, flags):
            name = deploy_flags[quant][1]
            if mode.get(name) != how:
                cluster.cli("deploy", *deploy_flags[quant], *flags,
                            *(["--replace"] if name in mode else []))
                mode[name] = how
            return name

        def cold(quant):
            name = redeploy(quant, "cold", ["--min-instances", "0", "--keep-alive", "0", "--no-wait"])
            cluster.wait(lambda: not cluster.instances(name), f"{name} to scale to zero")
            return name

        def warm(quant):
            name = redeploy(quant, "warm", ["--min-instances", "1", "--keep-alive", "600"])
            cluster.wait(lambda: any(i.state == "ready" for i in cluster.instances(name)),
                         f"{name} to be ready")
            return name

        runs = {}
        for r in range(args.rounds):
            for state in ("warm page cache", "fresh"):
                for quant in ("fp16", "nf4"):
                    if state == "fresh":
                        evict(ckpt)
                    else:
                        cat(ckpt)
                    order = ("transformers", "loadstar") if r % 2 == 0 else ("loadstar", "transformers")
                    for system in order:
                        if system == "transformers":
                            if state == "fresh":
                                evict(ckpt)
                            m = measure(sys.executable, cluster, "transformers", quant, directory=ckpt)
                        else:
                            name = cold(quant)
                            (evict if state == "fresh" else cat)(os.path.join(cluster.store, name))
                            m = measure(sys.executable, cluster, "loadstar", quant, name=name)
                            if not m["cold_start"]:
                                raise SystemExit(f"{name}: the lease did not cold-start an instance")
                        runs.setdefault(f"{system} {quant} cold start, {state}", []).append(m)
            for quant in ("fp16", "nf4"):
                name = warm(quant)
                m = measure(sys.executable, cluster, "loadstar", quant, name=name, again=True)
                runs.setdefault(f"loadstar {quant} warm attach, fresh process", []).append(m)
                runs.setdefault(f"loadstar {quant} warm attach, engine process", []).append(m["again"])
    finally:
        cluster.stop()

    for key, ms in runs.items():
        results[key] = {k: statistics.median(m[k] for m in ms)
                        for k in ("seconds", "acquire_seconds", "model_seconds",
                                  "first_token_seconds", "import_seconds")}
        results[key]["rounds"] = [round(m["seconds"], 4) for m in ms]
    ratios = {}
    for state in ("warm page cache", "fresh"):
        for quant in ("fp16", "nf4"):
            hf = results[f"transformers {quant} cold start, {state}"]["seconds"]
            ls = results[f"loadstar {quant} cold start, {state}"]["seconds"]
            ratios[f"{quant} cold start, {state}: transformers / loadstar"] = hf / ls
    summary = {"load_average_at_end": os.getloadavg(), "load_average_at_start": load_start,
               "checkpoint": "opt-125m architecture, random fp16 weights (scripts/make_opt_checkpoint.py)",
               "cpu_cores": os.cpu_count(), "rounds": args.rounds,
               "clock": "fresh process, after imports, until generate() returns the first token",
               "results": results, "ratios": ratios,
               "targets": {"fp16 ratio": 3.0, "nf4 ratio": 20.0, "warm attach seconds": 0.3}}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)

    print(f"{'measure (median of rounds)':<54} {'total s':>8} {'acquire':>8} {'model':>8} "
          f"{'token':>8}  rounds")
    for key, r in results.items():
        print(f"{key:<54} {r['seconds']:>8.3f} {r['acquire_seconds']:>8.3f} "
              f"{r['model_seconds']:>8.3f} {r['first_token_seconds']:>8.3f}  {r['rounds']}")
    print("(total = model + token; model: from_pretrained or acquire + load_model, "
          "acquire included; token: generate() of the first token)")
    for key, v in ratios.items():
        print(f"{key:<60} {v:6.2f}x")
    imp = statistics.median(m["import_seconds"] for ms in runs.values() for m in ms)
    print(f"(imports before the clock starts: {imp:.2f} s median per process; load average "
          f"{load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; summary in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
