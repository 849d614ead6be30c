// Pre-quantized checkpoints (SPEC §8 "pre-quantized"), side by side in one run:
//  1. dequantize throughput per ggml block type on one core (CPU time), loadstar's kernel
//     vs gguf-py's numpy `dequantize` on the same bytes (bench/prequant_peers.py);
//     target >= 50x gguf-py per core.
//  2. end to end: a llama GGUF (Q8_0 and Q4_K Linear weights) loaded with quantization
//     none (dequantized to fp32 while streaming) from the store, vs
//     transformers.from_pretrained(gguf_file=..., dtype=float32) on the file; target
//     >= 10x. `store save` of the file is reported beside it (a one-time cost).
//
//   bench_prequant [--mib N] [--reps N] [--hidden H] [--layers L] [--python PY]
//
// Python: --python, $LOADSTAR_PYTHON, or <build>/pyenv/bin/python3; without gguf the
// peer columns are "-".
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/env.h"
#include "bench/bench_util.h"
#include "loader/host_device.h"
#include "loader/quantized_load.h"
#include "quant/float16.h"
#include "quant/ggml_dequant.h"
#include "store/store.h"
#include "tests/util/gguf_builder.h"  // RandomGgmlBlocks (header-only)

namespace {

using namespace loadstar;
using quant::GgmlType;

std::string Python(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("LOADSTAR_PYTHON")) return env;
  return std::string(LOADSTAR_BENCH_BINARY_DIR) + "/pyenv/bin/python3";
}

std::string FormatBytesForBench(uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

std::string Capture(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[256];
  while (fgets(buf, sizeof buf, p) != nullptr) out += buf;
  if (pclose(p) != 0) return "";
  return out;
}

// GB/s of one thread storing `bytes` into a buffer whose pages are already populated
// (best of `reps`, CPU time).
double StoreLimitGBps(int64_t bytes, int reps) {
  std::vector<char> buf(static_cast<size_t>(bytes), 1);
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {
    const double c0 = bench::CpuSeconds();
    std::memset(buf.data(), r, buf.size());
    best = std::min(best, bench::CpuSeconds() - c0);
  }
  volatile char sink = buf[buf.size() / 2];  // keeps the stores observable
  (void)sink;
  return static_cast<double>(bytes) / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int mib = 16, reps = 3, hidden = 1024, layers = 8;
  std::string python_flag;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--mib") mib = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--hidden") hidden = std::atoi(argv[i + 1]);
    else if (a == "--layers") layers = std::atoi(argv[i + 1]);
    else if (a == "--python") python_flag = argv[i + 1];
  }
  const std::string python = Python(python_flag);
  const std::string peers = std::string(LOADSTAR_BENCH_SOURCE_DIR) + "/bench/prequant_peers.py";
  const bool have_gguf =
      std::system(("'" + python + "' -c 'import gguf' >/dev/null 2>&1").c_str()) == 0;
  char tmpl[] = "/tmp/bench-prequant-XXXXXX";
  const std::string dir = mkdtemp(tmpl);

  std::printf("== dequantize, 1 core, %d MiB of fp32 output per type (CPU seconds; ISA %s)\n",
              mib, std::string(quant::internal::IsaName(quant::internal::BestIsa())).c_str());
  // The limit of one core on this machine: storing the output bytes and nothing else
  // (memset into the same, already populated buffer), measured in this run. A dequantizer
  // cannot write faster than this; "50x needs" is what the target asks of that limit.
  const int64_t limit_elems = static_cast<int64_t>(mib) << 18;
  const double limit32 = StoreLimitGBps(limit_elems * 4, reps);
  const double limit16 = StoreLimitGBps(limit_elems * 2, reps);
  std::printf("single-core store limit (memset, same sizes): %.2f GB/s for fp32 output, "
              "%.2f GB/s for fp16 output (%.2f GB/s fp32-equivalent)\n",
              limit32, limit16, limit16 * 2);
  std::printf("%-6s %12s %12s %10s %12s %8s %12s %8s\n", "type", "fp32 out", "gguf-py", "ratio",
              "fp16 out*", "ratio", "50x needs", "limit");
  std::printf("(* fp16 out in fp32-equivalent GB/s: elements/s x 4 bytes, comparable with the "
              "columns beside it; \"limit\" is fp32 out / the fp32 store limit)\n");
  for (GgmlType type : {GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
                        GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ2_K,
                        GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    const quant::GgmlTypeInfo info = quant::GgmlInfo(type);
    const int64_t elems = static_cast<int64_t>(mib) << 18;  // mib MiB of fp32
    const int64_t blocks = elems / info.block_elems;
    const std::string in = testing::RandomGgmlBlocks(type, blocks, 7);
    std::vector<float> out(static_cast<size_t>(elems));
    double best = 1e30, best16 = 1e30;
    for (int r = 0; r < reps; ++r) {
      const double c0 = bench::CpuSeconds();
      quant::DequantizeGgml(type, reinterpret_cast<const uint8_t*>(in.data()), blocks,
                            out.data(), /*threads=*/1);
      best = std::min(best, bench::CpuSeconds() - c0);
    }
    // fp16 written straight from the kernel (the `none` path with torch_dtype fp16).
    std::vector<uint16_t> out16(static_cast<size_t>(elems));
    for (int r = 0; r < reps; ++r) {
      const double c0 = bench::CpuSeconds();
      quant::DequantizeGgmlTo(type, reinterpret_cast<const uint8_t*>(in.data()), blocks,
                              DType::kF16, out16.data(), /*threads=*/1)
          .IgnoreError();
      best16 = std::min(best16, bench::CpuSeconds() - c0);
    }
    const double gbps = elems * 4 / best / 1e9;
    const double gbps16 = elems * 4 / best16 / 1e9;  // fp32-equivalent: same elements/s scale
    std::string peer = "-", ratio = "-", ratio16 = "-", needs = "-";
    if (have_gguf) {
      const std::string path = dir + "/blocks.bin";
      WriteFileAtomically(Env::Default(), path, in).IgnoreError();
      const int64_t row_bytes = 4096 / info.block_elems * info.block_bytes;  // 4096-wide rows
      std::string s = Capture(fmt::format("'{}' '{}' dequant {} '{}' {} {}", python, peers,
                                          info.name, path, row_bytes, reps));
      if (!s.empty()) {
        const double t = std::atof(s.c_str());
        peer = fmt::format("{:.2f} GB/s", elems * 4 / t / 1e9);
        ratio = fmt::format("{:.1f}x", t / best);
        ratio16 = fmt::format("{:.1f}x", t / best16);
        needs = fmt::format("{:.1f} GB/s", 50 * elems * 4 / t / 1e9);
      }
    }
    std::printf("%-6s %7.2f GB/s %12s %10s %7.2f GB/s %8s %12s %7.2fx\n",
                std::string(info.name).c_str(), gbps, peer.c_str(), ratio.c_str(), gbps16,
                ratio16.c_str(), needs.c_str(), gbps / limit32);
  }

  std::printf("\n== end to end: llama GGUF (hidden %d, %d layers), quantization none, fp32\n",
              hidden, layers);
  if (!have_gguf) {
    std::printf("skipped: %s has no gguf\n", python.c_str());
    return 0;
  }
  for (const char* qtype : {"Q8_0", "Q4_K"}) {
    const std::string gguf = dir + "/model-" + qtype + ".gguf";
    if (std::system(fmt::format("'{}' '{}' make-gguf '{}' {} {} {}", python, peers, gguf, qtype,
                                hidden, layers)
                        .c_str()) != 0) {
      std::printf("%s: could not write the GGUF file\n", qtype);
      continue;
    }
    auto store = store::Store::Open({.root = dir + "/store-" + qtype}).value();
    double t0 = bench::Now();
    absl::StatusOr<store::Manifest> saved = store->Save(gguf, "m");
    const double save_s = bench::Now() - t0;
    if (!saved.ok()) {
      std::printf("%s: save failed: %s\n", qtype, std::string(saved.status().message()).c_str());
      continue;
    }
    loader::LoadPipeline::Options options;
    auto pipeline = loader::LoadPipeline::Create(options).value();
    loader::HostDevice device(0, 8ull << 30);
    quant::QuantConfig none;
    none.torch_dtype = DType::kF32;
    t0 = bench::Now();
    auto loaded = loader::LoadQuantized(*pipeline, *store, "m", none, {&device}, {},
                                        {.quantize_threads = 1});
    const double load_s = bench::Now() - t0;
    if (!loaded.ok()) {
      std::printf("%s: load failed: %s\n", qtype, std::string(loaded.status().message()).c_str());
      continue;
    }
    const uint64_t out_bytes = loaded->model->tensor_bytes();
    loaded->model->Free().IgnoreError();
    std::string hf = Capture(fmt::format("'{}' '{}' load '{}' 2>/dev/null", python, peers, gguf));
    const double hf_s = hf.empty() ? 0 : std::atof(hf.c_str());
    std::printf("%-5s GGUF %s -> %s fp32: store save %.2f s; loadstar load %.2f s; "
                "transformers %s; ratio %s (target >= 10x)\n",
                qtype, FormatBytesForBench(saved->TotalBytes()).c_str(),
                FormatBytesForBench(out_bytes).c_str(), save_s, load_s,
                hf_s > 0 ? fmt::format("{:.2f} s", hf_s).c_str() : "-",
                hf_s > 0 ? fmt::format("{:.1f}x", hf_s / load_s).c_str() : "-");
  }
  Env::Default()->RemoveRecursively(dir).IgnoreError();
  return 0;
}
