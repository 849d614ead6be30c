#!/bin/bash
# Runs, one after another, every bench behind SPEC §8's loading, save, deploy-nf4 and CLI
# rows (docs/performance.md, "SPEC §8 loading rows in one run" quotes its output), and
# writes each bench's output to OUT/<bench>.txt plus peers' JSON summary to OUT/peers.json.
#
#   bench/section8-loading.sh [OUT]      # OUT defaults to bench/data/section8
#
# Needs a build in build/ (cmake --build build --target loadstar bench_load bench_save
# bench_quant_load bench_admission) and ~25 GB free under bench/data/ (checkpoints are made
# there on first use and reused). About 25 minutes on the 2-core VM, peers.py ~10 of them.
# Run it alone: every figure is a ratio to a limit measured in the same bench, but other
# load on the machine moves the limits and the loads differently.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/data/section8}
data=bench/data
mkdir -p "$out"
for b in loadstar; do [ -x build/deploy/$b ] || { echo "build/deploy/$b missing: build first" >&2; exit 1; }; done
for b in bench_load bench_save bench_quant_load bench_admission; do
  [ -x build/bench/$b ] || { echo "build/bench/$b missing: build first" >&2; exit 1; }
done

step() {  # step NAME CMD...: runs CMD with its output in OUT/NAME.txt, timed
  local name=$1; shift
  echo "$(date -u +%H:%M:%S) $name: $*"
  { echo "# $(date -u '+%F %T UTC') $*"; "$@"; } > "$out/$name.txt" 2>&1
  tail -n 3 "$out/$name.txt" | sed 's/^/    /'
}

# Warm and cold loads, fresh process, against the peers (rows "load, warm, fresh process"
# and "load, cold": each tool's GB/s, its fresh-memory limit, faults and CPU).
step peers python3 bench/peers.py --data "$data" --gib 4 --runs 3 --json "$out/peers.json"
# The worker's steady state (pooled device memory) vs memcpy, and cold vs the fio /
# io_uring read limit with the loader's threads and depth.
step bench_load build/bench/bench_load --data "$data/load" --gib 1 --runs 3
# store save vs fio sequential O_DIRECT write; --quantize nf4 (one pass) vs plain save.
step bench_save build/bench/bench_save --data "$data" --gib 1 --runs 3
# Cold deploy with nf4 quantization (with and without double quant) vs cold fp16, and
# from the stored quantized artifact vs its byte share of the fp16 time.
step quant_load_nf4_dq build/bench/bench_quant_load --gib 1.0 --runs 5 --quant nf4-dq \
  --dir "$data/quant-load" --keep
step quant_load_nf4 build/bench/bench_quant_load --gib 1.0 --runs 5 --quant nf4 \
  --dir "$data/quant-load" --keep
# The DRAM tier: the next cold start after an admitting disk load.
step bench_admission build/bench/bench_admission --data "$data/admission" --gib 1 --runs 5
# CLI start-up: process start to exit, median of 20: --help, and status against a local
# cluster (one worker with a small host device, state in memory, loopback).
addr=127.0.0.1:$((20000 + RANDOM % 20000))
build/deploy/loadstar up --workers 1 --devices host:1 --device-memory 64MiB \
  --store "$data/peers-4g/store" --addr "$addr" --state memory > "$out/cluster.log" 2>&1 &
cluster=$!
trap 'kill $cluster 2>/dev/null; wait $cluster 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  build/deploy/loadstar status --addr "$addr" > /dev/null 2>&1 && break
  sleep 0.2
done
step cli env ADDR="$addr" python3 - <<'EOF'
import os, statistics, subprocess, time
for args in (["--help"], ["status", "--addr", os.environ["ADDR"]]):
    times = []
    for _ in range(20):
        t = time.perf_counter()
        subprocess.run(["build/deploy/loadstar", *args], stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - t) * 1e3)
    print(f"loadstar {args[0]}: median {statistics.median(times):.1f} ms "
          f"(min {min(times):.1f}, max {max(times):.1f}) of 20; target < 20 ms")
EOF
echo "outputs: $out"
