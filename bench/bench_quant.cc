// Quantization throughput on the CPU: nf4 / fp4 / int8 quantize and dequantize of an fp16
// weight, in GB/s of fp16 input (or fp16 output for dequantize), on 1 thread and on all
// threads, with the ISA the dispatcher picked and the generic fallback for comparison.
//
//   bench_quant [--rows R] [--cols C] [--reps N] [--bnb-gbps X]
//
// Target (SPEC §8): nf4 >= 2 GB/s of input per core, and >= 20x bitsandbytes' CPU
// quantize_4bit on the same tensor (bench/bnb_quant.py prints that figure; pass it as
// --bnb-gbps to get the ratio).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "quant/blockwise.h"
#include "quant/cpu_kernels.h"
#include "quant/float16.h"
#include "quant/int8.h"
#include "quant/policy.h"

namespace {

using namespace loadstar;
using namespace loadstar::quant;

constexpr double kTargetGbpsPerCore = 2.0;

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Best wall time and the CPU time (all threads) of that run. The cores are shared with
// other work on this machine, so the per-core figure uses CPU time, which contention
// does not inflate the way it inflates wall time.
struct Timing {
  double wall = 1e30;
  double cpu = 1e30;
};

template <typename F>
Timing Measure(int reps, F&& f) {
  Timing best;
  for (int r = 0; r < reps; ++r) {
    const double c0 = CpuSeconds();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    const double c1 = CpuSeconds();
    const double wall = std::chrono::duration<double>(t1 - t0).count();
    if (wall < best.wall) best = {wall, c1 - c0};
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 4096, cols = 4096;
  int reps = 5;
  double bnb_gbps = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--rows") rows = std::atoll(argv[i + 1]);
    if (a == "--cols") cols = std::atoll(argv[i + 1]);
    if (a == "--reps") reps = std::atoi(argv[i + 1]);
    if (a == "--bnb-gbps") bnb_gbps = std::atof(argv[i + 1]);
  }
  const int64_t n = rows * cols;
  const double bytes = static_cast<double>(n) * 2;  // fp16 input
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  std::vector<Half> w(n);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (auto& h : w) h = FromFloat<Half>(normal(rng));

  std::printf("bench_quant: fp16 weight %lld x %lld (%.1f MiB), %d hardware threads, ISA %s\n",
              static_cast<long long>(rows), static_cast<long long>(cols), bytes / (1 << 20),
              cores, std::string(internal::IsaName(internal::BestIsa())).c_str());
  std::printf("%-34s %7s %10s %16s %14s\n", "case", "threads", "wall GB/s",
              "GB/s per CPU-s", "vs 2 GB/s/core");

  double nf4_one_core = 0;
  // Returns GB/s per CPU-second (per core).
  auto report = [&](const char* name, int threads, Timing t) {
    const double wall_gbps = bytes / t.wall / 1e9;
    const double core_gbps = bytes / t.cpu / 1e9;
    const int used = threads == 0 ? cores : threads;
    std::printf("%-34s %7d %10.2f %16.2f %13.2fx\n", name, used, wall_gbps, core_gbps,
                core_gbps / kTargetGbpsPerCore);
    return core_gbps;
  };

  for (int threads : {1, 0}) {
    QuantizeOptions opt{threads};
    for (QuantType type : {QuantType::kNf4, QuantType::kFp4}) {
      for (bool dq : {false, true}) {
        Fp4Spec spec{type, 64, dq};
        absl::StatusOr<Quantized4bit> q;
        const Timing s = Measure(reps, [&] {
          q = Quantize4bit(spec, DType::kF16, w.data(), {rows, cols}, opt);
        });
        const std::string name = std::string(QuantTypeName(type)) + " quantize bs64" +
                                 (dq ? " +dq" : "");
        const double g = report(name.c_str(), threads, s);
        if (type == QuantType::kNf4 && !dq && threads == 1) nf4_one_core = g;
        if (!dq) {
          std::vector<Half> out(n);
          const Timing sd = Measure(reps, [&] {
            (void)Dequantize4bit(*q, DType::kF16, out.data(), opt);
          });
          report((std::string(QuantTypeName(type)) + " dequantize -> fp16").c_str(), threads,
                 sd);
        }
      }
    }
    absl::StatusOr<QuantizedInt8> q8;
    const Timing s8 = Measure(reps, [&] {
      q8 = QuantizeInt8(DType::kF16, w.data(), {rows, cols}, opt);
    });
    report("int8 quantize (row-wise)", threads, s8);
  }
  // torch_dtype cast of the tensors that are not quantized (bytes = fp16 side).
  {
    std::vector<float> f32(n);
    std::vector<Half> f16(n);
    const Timing s = Measure(reps, [&] {
      (void)CastFloatTensor(DType::kF32, f32.data(), n, DType::kF16, f16.data());
    });
    report("cast f32 -> f16", 0, s);
    std::vector<BFloat16> bf16(n);
    const Timing s2 = Measure(reps, [&] {
      (void)CastFloatTensor(DType::kBF16, bf16.data(), n, DType::kF16, f16.data());
    });
    report("cast bf16 -> f16", 0, s2);
  }
  // Scalar reference and generic kernels, for scale.
  {
    const Timing s = Measure(std::max(1, reps / 2), [&] {
      (void)Quantize4bitRef({QuantType::kNf4, 64, false}, DType::kF16, w.data(), {rows, cols});
    });
    report("nf4 quantize bs64 (scalar ref)", 1, s);
  }
  for (int bs : {32, 256, 4096}) {
    const Timing s = Measure(reps, [&] {
      (void)Quantize4bit({QuantType::kNf4, bs, false}, DType::kF16, w.data(), {rows, cols},
                         {1});
    });
    report(("nf4 quantize bs" + std::to_string(bs)).c_str(), 1, s);
  }
  std::printf("nf4 quantize, 1 thread: %.2f GB/s per CPU-second = %.2fx the 2 GB/s/core target\n",
              nf4_one_core, nf4_one_core / kTargetGbpsPerCore);
  if (bnb_gbps > 0) {
    std::printf("vs bitsandbytes CPU quantize_4bit (%.3f GB/s per CPU-second): %.1fx (target >= 20x)\n",
                bnb_gbps, nf4_one_core / bnb_gbps);
  }
  return 0;
}
