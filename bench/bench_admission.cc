// bench_admission: cold start after an admitting load (issue 14 item 6, ServerlessLLM's
// multi-tier loading). On a worker with a host cache, the first load of a model reads the
// disk (page cache dropped, O_DIRECT, as bench_load --cold) and leaves the verified bytes in
// the cache; the next cold start of that model copies them from DRAM. Measured in one run:
//
//   (a) memcpy with the loader's thread count between pre-faulted buffers (the limit of
//       the DRAM tier);
//   (b) cold disk load without admission (admit_to_cache off): what admission may cost;
//   (c) cold disk load with admission (the cache entry is fresh memory every round);
//   (d) the next load, from the host cache, into device memory reused from earlier loads
//       (a worker's steady state, as bench_load (c)); (d') the same into fresh device
//       memory (the kernel maps every page: this VM's free page reporting makes that slow);
// with the ratios (d)/(c) and (d)/(b) (target >= 5x faster) and (d)/(a) (target >= 0.85x
// memcpy), each the median of the per-round ratios.
//
//   build/bench/bench_admission [--data DIR] [--gib 1] [--runs 3] [--threads N]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/env.h"
#include "base/streaming_copy.h"
#include "bench/bench_util.h"
#include "loader/host_cache.h"
#include "loader/host_device.h"
#include "loader/load_pipeline.h"
#include "loader/model_source.h"
#include "nlohmann/json.hpp"
#include "store/store.h"

namespace loadstar {
namespace {

using bench::Median;
using bench::Now;

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "bench_admission: %s\n", s.ToString().c_str());
  std::exit(1);
}

// (a) memcpy with `threads` threads between two pre-faulted buffers, measured in every
// round next to the loads it is compared with (this machine's memory bandwidth drifts
// 2x with its other tenants). The limit is the faster of glibc's memcpy and the
// streaming-store copy (base/streaming_copy.h) the host device copies with.
class Memcpy {
 public:
  Memcpy(int threads, uint64_t bytes)
      : threads_(threads), bytes_(bytes),
        src_(static_cast<char*>(std::aligned_alloc(4096, bytes))),
        dst_(static_cast<char*>(std::aligned_alloc(4096, bytes))) {
    std::memset(src_, 1, bytes);
    std::memset(dst_, 2, bytes);
  }
  ~Memcpy() {
    std::free(src_);
    std::free(dst_);
  }
  // The faster copy of this round.
  double Gbps() {
    glibc_ = Once(false);
    streaming_ = Once(true);
    return std::max(glibc_, streaming_);
  }
  double glibc() const { return glibc_; }
  double streaming() const { return streaming_; }

 private:
  double Once(bool streaming) {
    double t0 = Now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads_; ++t) {
      pool.emplace_back([this, t, streaming] {
        uint64_t per = bytes_ / threads_, begin = t * per;
        for (uint64_t o = 0; o < per; o += 4 << 20) {
          const uint64_t n = std::min<uint64_t>(4 << 20, per - o);
          if (streaming) {
            CopyAroundCache(dst_ + begin + o, src_ + begin + o, n);
          } else {
            std::memcpy(dst_ + begin + o, src_ + begin + o, n);
          }
        }
      });
    }
    for (auto& th : pool) th.join();
    return static_cast<double>(bytes_) / (Now() - t0) / 1e9;
  }

  const int threads_;
  double glibc_ = 0, streaming_ = 0;
  const uint64_t bytes_;
  char* const src_;
  char* const dst_;
};

void DropCaches(const loader::ModelSource& source) {
  absl::Status s = bench::DropCaches(source);
  if (!s.ok()) Die(s);
}

struct Flags {
  std::string data = "bench/data";
  double gib = 1;
  int runs = 3;
  int threads = 0;
};

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (bench::FlagReader r(argc, argv, "bench_admission"); r.Next();) {
    if (r.Is("--data")) f.data = r.Value();
    else if (r.Is("--gib")) f.gib = std::stod(r.Value());
    else if (r.Is("--runs")) f.runs = std::stoi(r.Value());
    else if (r.Is("--threads")) f.threads = std::stoi(r.Value());
    else r.Unknown();
  }
  if (f.runs < 1) Die(absl::InvalidArgumentError("--runs must be at least 1"));
  if (f.gib <= 0) Die(absl::InvalidArgumentError("--gib must be positive"));
  return f;
}

void PrintRow(const char* what, double value, double target, const char* unit) {
  std::printf("%-46s %6.2f x %-22s (target >= %.2f) %s\n", what, value, unit, target,
              value >= target ? "MET" : "MISSED");
}

std::string Range(const std::vector<double>& v, const char* fmt_one) {
  auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return fmt::format(fmt::runtime(std::string(fmt_one) + ".." + fmt_one), *lo, *hi);
}

int Main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  const std::string tag = fmt::format("{:.2f}", flags.gib);
  const std::string ckpt = JoinPath(flags.data, "ckpt-admission-" + tag);
  const std::string name = "bench-admission-" + tag;
  auto store = bench::OpenStoreWithLlama(flags.data, ckpt, name, flags.gib);
  if (!store.ok()) Die(store.status());
  auto source = loader::ModelSourceFromStore(**store, name);
  if (!source.ok()) Die(source.status());
  const uint64_t bytes = source->manifest.TotalBytes();
  auto entry_plan = loader::MakeLoadPlan(source->manifest, 1, loader::PlanOptions{});
  if (!entry_plan.ok()) Die(entry_plan.status());

  loader::LoadPipeline::Options options;
  options.threads = flags.threads;
  options.io_mode = loader::IoMode::kDirect;
  // The pipeline's thread count, for memcpy; each round makes its own cache and pipeline.
  auto probe = loader::LoadPipeline::Create(options);
  if (!probe.ok()) Die(probe.status());
  const int threads = (*probe)->threads();
  probe->reset();
  std::printf("model %s: %zu tensors, %.2f GiB; loader threads %d\n", name.c_str(),
              source->manifest.tensors.size(), static_cast<double>(bytes) / (1ull << 30),
              threads);
  Memcpy memcpy_bench(threads, std::min<uint64_t>(bytes, 1ull << 30));
  memcpy_bench.Gbps();  // warm-up

  // One device for all rounds, keeping its memory between loads (retain_bytes), as a GPU's
  // memory stays put; warmed by one untimed load so (d) copies into populated pages.
  const uint64_t device_bytes = entry_plan->device_bytes[0] + (64ull << 20);
  loader::HostDevice device(0, device_bytes, /*retain_bytes=*/device_bytes);
  auto load = [&](loader::LoadPipeline& pipeline, loader::Device& dev,
                  const loader::PlanOptions& plan, loader::LoadStats* stats) {
    auto model = pipeline.Load(*source, {&dev}, plan, nullptr, {}, stats);
    if (!model.ok()) Die(model.status());
  };
  {
    auto p = loader::LoadPipeline::Create(options);
    if (!p.ok()) Die(p.status());
    loader::LoadStats s;
    load(**p, device, {}, &s);
    load(**p, device, {}, &s);
  }

  std::vector<double> plain_s, admit_s, dram_s, fresh_s, speedup, vs_memcpy, admit_cost,
      memcpy_runs, speedup_plain, ceiling, glibc_runs, streaming_runs;
  std::string plain_io, admit_io, dram_io;
  for (int r = 0; r < flags.runs; ++r) {
    loader::HostCache cache({entry_plan->device_bytes[0], nullptr});
    auto o = options;
    o.cache = &cache;
    auto pipeline = loader::LoadPipeline::Create(o);
    if (!pipeline.ok()) Die(pipeline.status());
    loader::LoadStats plain, admitted, dram, fresh;
    // (b) cold, not admitted.
    loader::PlanOptions no_admit;
    no_admit.admit_to_cache = false;
    DropCaches(*source);
    load(**pipeline, device, no_admit, &plain);
    // (c) cold, admitted.
    DropCaches(*source);
    load(**pipeline, device, {}, &admitted);
    if (plain.from_cache || !admitted.admitted) {
      Die(absl::InternalError("the admitting load was not admitted"));
    }
    // (d) from DRAM into reused device memory; (d') into a fresh device.
    DropCaches(*source);  // nothing may come from the page cache
    load(**pipeline, device, {}, &dram);
    const double memcpy_gbps = memcpy_bench.Gbps();
    {
      loader::HostDevice fresh_device(1, device_bytes);
      load(**pipeline, fresh_device, {}, &fresh);
    }
    if (!dram.from_cache || !fresh.from_cache) Die(absl::InternalError("not from the cache"));
    plain_s.push_back(plain.seconds);
    admit_s.push_back(admitted.seconds);
    dram_s.push_back(dram.seconds);
    fresh_s.push_back(fresh.seconds);
    speedup.push_back(admitted.seconds / dram.seconds);
    speedup_plain.push_back(plain.seconds / dram.seconds);
    vs_memcpy.push_back(dram.gbps / memcpy_gbps);
    admit_cost.push_back(admitted.seconds / plain.seconds);
    // The most a copy from DRAM can gain over this round's disk load: the disk load's time
    // over the time memcpy takes for the same bytes (the ceiling of "(d) vs (b)").
    ceiling.push_back(plain.seconds * memcpy_gbps / (static_cast<double>(bytes) / 1e9));
    memcpy_runs.push_back(memcpy_gbps);
    glibc_runs.push_back(memcpy_bench.glibc());
    streaming_runs.push_back(memcpy_bench.streaming());
    plain_io = plain.io;
    admit_io = admitted.io;
    dram_io = dram.io;
    std::printf("round %d: cold %.3f s, cold+admit %.3f s, DRAM %.3f s (%.2f GB/s; memcpy "
                "%.2f GB/s), DRAM into fresh memory %.3f s\n",
                r + 1, plain.seconds, admitted.seconds, dram.seconds, dram.gbps, memcpy_gbps,
                fresh.seconds);
  }
  const double gb = static_cast<double>(bytes) / 1e9;
  std::printf("\n(a) copy, %d threads, pre-faulted                %7.2f GB/s  (%s; the faster "
              "of glibc memcpy %s and the streaming-store copy %s)\n",
              threads, Median(memcpy_runs), Range(memcpy_runs, "{:.2f}").c_str(),
              Range(glibc_runs, "{:.2f}").c_str(), Range(streaming_runs, "{:.2f}").c_str());
  std::printf("(b) cold load, no admission [%s]     %.3f s  (%s s, median of %d)\n",
              plain_io.c_str(), Median(plain_s), Range(plain_s, "{:.3f}").c_str(), flags.runs);
  std::printf("(c) cold load, admitted [%s]         %.3f s  (%s s)\n", admit_io.c_str(),
              Median(admit_s), Range(admit_s, "{:.3f}").c_str());
  std::printf("(d) next load from the host cache [%s], device memory reused   %.3f s  "
              "(%s s, %.2f GB/s)\n",
              dram_io.c_str(), Median(dram_s), Range(dram_s, "{:.3f}").c_str(),
              gb / Median(dram_s));
  std::printf("(d') same, into fresh device memory                 %.3f s  (%.2f GB/s)\n",
              Median(fresh_s), gb / Median(fresh_s));
  // Ratios: medians of the per-round ratios.
  PrintRow("(d) vs (c): DRAM tier speed-up", Median(speedup), 5.0, "the admitting disk load");
  std::printf("    per round %s\n", Range(speedup, "{:.2f}").c_str());
  PrintRow("(d) vs (b): DRAM tier vs a plain cold load", Median(speedup_plain), 5.0,
           "the plain disk load");
  std::printf("    per round %s\n", Range(speedup_plain, "{:.2f}").c_str());
  std::printf("    ceiling of this machine: disk load time / memcpy time of the bytes = %.2f x "
              "(per round %s); (d) vs (b) reaches %.2f of it\n",
              Median(ceiling), Range(ceiling, "{:.2f}").c_str(),
              Median(speedup_plain) / Median(ceiling));
  PrintRow("(d) vs (a): DRAM tier vs memcpy", Median(vs_memcpy), 0.85, "memcpy");
  std::printf("    per round %s\n", Range(vs_memcpy, "{:.2f}").c_str());
  std::printf("%-46s %6.2f x (cost of admission on a cold load; 1.00 = free)\n",
              "(c) vs (b): admitting vs plain cold load", Median(admit_cost));
  nlohmann::json out = {{"bytes", bytes},
                        {"threads", threads},
                        {"memcpy_gbps", memcpy_runs},
                        {"cold_plain_s", plain_s},
                        {"cold_admit_s", admit_s},
                        {"dram_reused_s", dram_s},
                        {"dram_fresh_s", fresh_s},
                        {"speedup_vs_admit", Median(speedup)},
                        {"speedup_vs_plain", Median(speedup_plain)},
                        {"dram_ratio_memcpy", Median(vs_memcpy)},
                        {"admit_cost", Median(admit_cost)},
                        {"ceiling_vs_plain", Median(ceiling)}};
  std::printf("\njson: %s\n", out.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace loadstar

int main(int argc, char** argv) { return loadstar::Main(argc, argv); }
