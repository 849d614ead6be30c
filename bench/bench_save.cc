// bench_save: `store save` against the disk's sequential write limit, measured in one run
// (issue 14 item 4).
//
//   (a) fio: O_DIRECT sequential write of the model's size into the store's filesystem,
//       at the writer's block size and queue depth (store/model_writer.h: kWriteBlockBytes,
//       one write in flight), io_uring, one fsync at the end;
//   (b) Store::Save of a ~1 GiB fp16 Llama-shaped safetensors checkpoint (what
//       `loadstar store save` does);
//   (c) SaveQuantized nf4 (`store save --quantize nf4`: the variant quantized from the
//       source bytes while the model is copied and written at the same time, one pass);
//   (d) the same with double quant (`--quantize nf4 --double-quant`);
//   (e) the limit of (c): fio writing the model's bytes and the nf4 variant's bytes into
//       two files at the same time (two jobs, each at the writer's block size and depth,
//       as the one-pass save's two writers do); its time is the slower job's.
// rounds alternate a, e, b, c, d so a drift of the (virtual) disk hits all alike; ratios
// are medians of per-round ratios. Before each measurement the source checkpoint is
// either read once (--source warm, the default: a save right after a download) or
// evicted with posix_fadvise(DONTNEED) (--source cold), and the previous round's copy is
// removed first (not timed).
//
//   build/bench/bench_save [--data DIR] [--gib 1] [--runs 3] [--source warm|cold]
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/env.h"
#include "bench/bench_util.h"
#include "nlohmann/json.hpp"
#include "quant/policy.h"
#include "store/model_writer.h"
#include "store/quantized_artifact.h"
#include "store/quantized_save.h"
#include "store/store.h"

namespace loadstar {
namespace {

using bench::CpuSeconds;
using bench::Median;
using bench::Now;

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "bench_save: %s\n", s.ToString().c_str());
  std::exit(1);
}

struct Flags {
  std::string data = "bench/data";
  double gib = 1.0;
  int runs = 3;
  bool cold_source = false;
};

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (bench::FlagReader r(argc, argv, "bench_save"); r.Next();) {
    if (r.Is("--data")) {
      f.data = r.Value();
    } else if (r.Is("--gib")) {
      f.gib = std::stod(r.Value());
    } else if (r.Is("--runs")) {
      f.runs = std::stoi(r.Value());
      if (f.runs < 1) Die(absl::InvalidArgumentError("--runs must be >= 1"));
    } else if (r.Is("--source")) {
      std::string v = r.Value();
      if (v != "warm" && v != "cold") {
        r.Fail("--source " + v + ": expected warm or cold");
      }
      f.cold_source = v == "cold";
    } else {
      r.Unknown();
    }
  }
  return f;
}

// Evicts `path` from the page cache (cold) or reads it once (warm).
void PrepareSource(const std::string& path, bool cold) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die(absl::NotFoundError("open " + path));
  if (cold) {
    ::fdatasync(fd);
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  } else {
    std::vector<char> buf(8 << 20);
    while (::read(fd, buf.data(), buf.size()) > 0) {
    }
  }
  ::close(fd);
}

// Seconds fio takes to write files of `bytes` (one job per entry, all at once) as the
// writer does: the slowest job's; 0 when fio is missing. (a) is one file, (e) two.
double FioSeconds(const std::string& dir, const std::vector<uint64_t>& bytes,
                  std::string* how) {
  if (std::system("command -v fio >/dev/null 2>&1") != 0) return 0;
  const uint64_t block = store::kWriteBlockBytes;
  std::vector<uint64_t> sizes;
  std::vector<std::string> files;
  std::string jobs, sizes_text;
  for (size_t i = 0; i < bytes.size(); ++i) {
    sizes.push_back((bytes[i] + block - 1) / block * block);
    files.push_back(JoinPath(dir, fmt::format("fio-write-{}.tmp", i)));
    jobs += fmt::format(" --name=seqwrite{} --filename='{}' --size={}", i, files[i], sizes[i]);
    sizes_text += fmt::format("{}{}", i ? " + " : "", sizes[i]);
  }
  const std::string common = fmt::format(
      "--rw=write --direct=1 --bs={} --iodepth=1 --ioengine=io_uring --end_fsync=1", block);
  *how = fmt::format("fio {} --size={}{}", common, sizes_text,
                     bytes.size() > 1 ? ", one job per file, concurrently" : "");
  std::string cmd = fmt::format("fio {} --output-format=json{} 2>/dev/null", common, jobs);
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while (p != nullptr && (n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const bool ok = p != nullptr && ::pclose(p) == 0;
  for (const std::string& file : files) Env::Default()->RemoveFile(file).IgnoreError();
  if (!ok) Die(absl::InternalError("fio failed: " + cmd));
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || j["jobs"].size() != bytes.size()) {
    Die(absl::InternalError("fio printed no JSON for every job"));
  }
  double slowest = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    // fio's runtime covers the writes (its start-up is not in it); add the end fsync's
    // latency where fio reports it.
    const auto& job = j["jobs"][i];
    double seconds = job["write"]["runtime"].get<double>() / 1e3;
    const auto& sync = job["sync"];
    if (sync.contains("lat_ns") && sync["lat_ns"].contains("max")) {
      seconds += sync["lat_ns"]["max"].get<double>() / 1e9;
    }
    slowest = std::max(slowest, seconds * static_cast<double>(bytes[i]) /
                                    static_cast<double>(sizes[i]));
  }
  return slowest;
}

struct Sample {
  double seconds = 0;
  double cpu = 0;
};

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  Env* env = Env::Default();
  const std::string ckpt = JoinPath(flags.data, fmt::format("save-ckpt-{}g", flags.gib));
  const std::string src = JoinPath(ckpt, "model.safetensors");
  if (!env->FileExists(src)) {
    std::printf("writing a %.2f GiB fp16 checkpoint to %s ...\n", flags.gib, ckpt.c_str());
    absl::Status s =
        bench::MakeLlamaCheckpoint(ckpt, flags.gib, bench::LlamaShape{2048, 5504, 32000});
    if (!s.ok()) Die(s);
  }
  const std::string root = JoinPath(flags.data, "save-store");
  env->RemoveRecursively(root).IgnoreError();
  auto store = store::Store::Open({.root = root});
  if (!store.ok()) Die(store.status());
  const std::string name = "bench-save";

  quant::QuantConfig nf4;
  nf4.type = quant::QuantType::kNf4;
  quant::QuantConfig nf4dq = nf4;
  nf4dq.double_quant = true;

  uint64_t bytes = 0, nf4_bytes = 0;
  size_t source_tensors = 0;
  int64_t dq_sizing = 0, dq_fill = 0, dq_weights = 0;
  // One save; `config` null for a plain one. Returns wall and CPU seconds.
  auto save = [&](const quant::QuantConfig* config) {
    if ((*store)->GetManifest(name).ok()) {
      absl::Status s = (*store)->Remove(name);
      if (!s.ok()) Die(s);
    }
    PrepareSource(src, flags.cold_source);
    std::vector<quant::QuantConfig> configs;
    if (config != nullptr) configs.push_back(*config);
    std::vector<store::QuantizedInputsStats> stats;
    double t0 = Now(), c0 = CpuSeconds();
    auto m = store::SaveQuantized(**store, ckpt, name, configs, {}, {}, &stats);
    if (!m.ok()) Die(m.status());
    Sample sample{Now() - t0, CpuSeconds() - c0};
    bytes = m->model.TotalBytes();
    source_tensors = m->model.tensors.size();
    if (config != nullptr && !config->double_quant) nf4_bytes = m->variants[0].TotalBytes();
    if (config != nullptr && config->double_quant) {
      dq_sizing = stats[0].sizing_quantizations;
      dq_fill = stats[0].fill_quantizations();
      dq_weights = 0;
      for (const auto& t : m->variants[0].tensors) {
        if (t.name.ends_with(".nested_absmax")) ++dq_weights;
      }
    }
    return sample;
  };

  // A first plain and nf4 save learn the sizes (and warm the code paths); not counted.
  save(nullptr);
  save(&nf4);
  std::printf("checkpoint %s: %.3f GB; source %s; store %s\n", src.c_str(),
              static_cast<double>(bytes) / 1e9,
              flags.cold_source ? "cold (posix_fadvise DONTNEED before each save)"
                                : "warm (read once before each save)",
              root.c_str());

  std::string fio_how, limit_how;
  std::vector<double> fio, plain, q, qdq, r_plain, r_q, r_qdq, cpu_plain, cpu_q;
  std::vector<double> limit, r_limit, r_limit_plain;
  auto gbps = [&](double s) { return static_cast<double>(bytes) / s / 1e9; };
  for (int r = 0; r < flags.runs; ++r) {
    double f = FioSeconds(root, {bytes}, &fio_how);
    double l = FioSeconds(root, {bytes, nf4_bytes}, &limit_how);
    Sample p = save(nullptr);
    Sample n = save(&nf4);
    Sample d = save(&nf4dq);
    plain.push_back(gbps(p.seconds));
    q.push_back(gbps(n.seconds));
    qdq.push_back(gbps(d.seconds));
    cpu_plain.push_back(p.cpu);
    cpu_q.push_back(n.cpu);
    r_q.push_back(n.seconds / p.seconds);
    r_qdq.push_back(d.seconds / p.seconds);
    if (f > 0) {
      fio.push_back(gbps(f));
      r_plain.push_back(f / p.seconds);
    }
    if (l > 0) {
      limit.push_back(l);
      r_limit.push_back(n.seconds / l);
      r_limit_plain.push_back(l / p.seconds);
    }
    std::printf("round %d: fio %.2f GB/s, fio model+nf4 files %.2f s, save %.2f s = %.2f GB/s "
                "(%.2f CPU-s), save+nf4 %.2f s (%.2f CPU-s), save+nf4-dq %.2f s\n",
                r + 1, f > 0 ? gbps(f) : 0.0, l, p.seconds, gbps(p.seconds), p.cpu,
                n.seconds, n.cpu, d.seconds);
  }
  auto range = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return fmt::format("{:.2f}-{:.2f}", v.front(), v.back());
  };
  std::printf("\n");
  if (!fio.empty()) {
    std::printf("(a) fio O_DIRECT write   %6.2f GB/s (%s)  [%s]\n", Median(fio),
                range(fio).c_str(), fio_how.c_str());
  } else {
    std::printf("(a) fio not installed: no write baseline\n");
  }
  std::printf("(b) store save           %6.2f GB/s (%s)", Median(plain), range(plain).c_str());
  if (!r_plain.empty()) {
    std::printf("   %.2f x fio (%s; target >= 0.80) %s", Median(r_plain),
                range(r_plain).c_str(), Median(r_plain) >= 0.8 ? "MET" : "MISSED");
  }
  std::printf("\n(c) save --quantize nf4  %6.2f GB/s (%s)   time %.2f x plain (%s; target "
              "<= 1.10) %s\n",
              Median(q), range(q).c_str(), Median(r_q), range(r_q).c_str(),
              Median(r_q) <= 1.1 ? "MET" : "MISSED");
  std::printf("(d) save --quantize nf4 --double-quant %6.2f GB/s (%s)   time %.2f x plain "
              "(%s)\n    quantize calls: %lld sizing + %lld writing for %zu source tensors "
              "(%lld double-quant weights)\n",
              Median(qdq), range(qdq).c_str(), Median(r_qdq), range(r_qdq).c_str(),
              static_cast<long long>(dq_sizing), static_cast<long long>(dq_fill),
              source_tensors, static_cast<long long>(dq_weights));
  if (!limit.empty()) {
    std::printf("(e) limit of (c): %.3f GB model + %.3f GB nf4 variant written at once by "
                "fio  %.2f s (%s)\n    [%s]\n    (c) time / (e) time %.2f (%s); (e) time / (b) "
                "time %.2f (%s): the least (c) / (b) this disk allows\n",
                static_cast<double>(bytes) / 1e9, static_cast<double>(nf4_bytes) / 1e9,
                Median(limit), range(limit).c_str(), limit_how.c_str(), Median(r_limit),
                range(r_limit).c_str(), Median(r_limit_plain), range(r_limit_plain).c_str());
  }
  std::printf("    CPU seconds: plain %.2f, nf4 %.2f (medians)\n", Median(cpu_plain),
              Median(cpu_q));
  nlohmann::json out = {{"bytes", bytes},
                        {"source", flags.cold_source ? "cold" : "warm"},
                        {"fio", fio_how},
                        {"fio_gbps", fio},
                        {"save_gbps", plain},
                        {"save_nf4_gbps", q},
                        {"save_nf4_dq_gbps", qdq},
                        {"save_ratio_fio", r_plain.empty() ? 0.0 : Median(r_plain)},
                        {"nf4_time_ratio", Median(r_q)},
                        {"nf4_bytes", nf4_bytes},
                        {"limit_fio", limit_how},
                        {"limit_seconds", limit},
                        {"nf4_time_over_limit", r_limit.empty() ? 0.0 : Median(r_limit)},
                        {"limit_over_plain", r_limit_plain.empty() ? 0.0 : Median(r_limit_plain)},
                        {"nf4_dq_time_ratio", Median(r_qdq)},
                        {"dq_sizing_quantizations", dq_sizing},
                        {"dq_fill_quantizations", dq_fill},
                        {"source_tensors", source_tensors},
                        {"dq_weights", dq_weights}};
  std::printf("\njson: %s\n", out.dump().c_str());
  env->RemoveRecursively(root).IgnoreError();
  return 0;
}

}  // namespace
}  // namespace loadstar

int main(int argc, char** argv) { return loadstar::Main(argc, argv); }
