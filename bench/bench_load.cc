// bench_load: the loader against the limits of this machine, measured in one run
// (SPEC §8, "load, warm" and "load, cold").
//
//   (a) memcpy bandwidth with the loader's thread count (pre-faulted buffers; also with
//       streaming stores, the faster copy here and the worker row's limit, and hashing
//       each piece before its streaming copy: the least a verified load does), the
//       bandwidth of filling fresh host-device memory (shm pages the kernel must map, via
//       HostDevice's pwrite), and (a'') a memcpy into newly mapped shared memory (memfd)
//       of the model's size;
//   (b) O_DIRECT sequential read of the model's data files at the loader's threads and
//       queue depth: the fastest of fio "numjobs = threads, each its part", fio "one job
//       at the whole depth" and the loader's io_uring engine alone into populated shared
//       memory (see DirectReadLimit);
//   (c) warm load (files in the page cache) onto one pooled host device, populated before
//       the loads as a worker's is (steady state of a worker), and (c') onto fresh device
//       memory (a new device per load, as `loadstar load`), each round next to a fresh
//       fill of the same size (the fresh-memory limit of that round);
//   (d) cold load (page cache dropped) onto one host device;
// each with its ratio to (a)/(b) and the target.
//
// The checkpoint (a >= 4 GiB fp16 Llama-shaped safetensors file) and its store copy are
// made once under --data (default bench/data, gitignored) and reused.
//
//   build-loader/bench/bench_load [--data DIR] [--gib 4.25] [--runs 3] [--threads N]
//                                 [--chunk-kib 4096]
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <xxh_x86dispatch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/env.h"
#include "base/streaming_copy.h"
#include "bench/bench_util.h"
#include "loader/host_device.h"
#include "loader/io_engine.h"
#include "loader/load_pipeline.h"
#include "loader/model_source.h"
#include "nlohmann/json.hpp"
#include "store/safetensors_writer.h"
#include "store/store.h"

namespace loadstar {
namespace {

using bench::CpuSeconds;
using bench::Median;
using bench::Now;

// Wall and CPU rates of one measurement.
struct Rate {
  double gbps = 0;      // bytes / wall second
  double gb_per_cpu = 0;  // bytes / CPU second
};

Rate MedianRate(std::vector<Rate> v) {
  Rate r;
  std::vector<double> a, b;
  for (const Rate& x : v) {
    a.push_back(x.gbps);
    b.push_back(x.gb_per_cpu);
  }
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  if (!v.empty()) r = Rate{a[a.size() / 2], b[b.size() / 2]};
  return r;
}

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "bench_load: %s\n", s.ToString().c_str());
  std::exit(1);
}

// (a) `copy` (memcpy; the streaming-store copy; a verified copy) with `threads` threads
// between pre-faulted buffers, 4 MiB at a time.
using CopyFn = void (*)(char* dst, const char* src, uint64_t n);
void GlibcMemcpy(char* dst, const char* src, uint64_t n) { std::memcpy(dst, src, n); }
void StreamingCopy(char* dst, const char* src, uint64_t n) { CopyAroundCache(dst, src, n); }
// What a verified load must do at least: hash each 512 KiB piece where it lies (the
// loader's in-place piece), then copy it with streaming stores.
void VerifiedCopy(char* dst, const char* src, uint64_t n) {
  static thread_local uint64_t sink = 0;
  for (uint64_t o = 0; o < n; o += 512 << 10) {
    const uint64_t len = std::min<uint64_t>(512 << 10, n - o);
    sink ^= XXH3_64bits_dispatch(src + o, len);
    CopyAroundCache(dst + o, src + o, len);
  }
}

Rate CopyRate(int threads, uint64_t bytes, CopyFn copy) {
  char* src = static_cast<char*>(std::aligned_alloc(4096, bytes));
  char* dst = static_cast<char*>(std::aligned_alloc(4096, bytes));
  std::memset(src, 1, bytes);
  std::memset(dst, 2, bytes);
  std::vector<Rate> runs;
  for (int r = 0; r < 3; ++r) {
    double t0 = Now(), c0 = CpuSeconds();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        uint64_t per = bytes / threads, begin = t * per;
        for (uint64_t o = 0; o < per; o += 4 << 20) {
          copy(dst + begin + o, src + begin + o, std::min<uint64_t>(4 << 20, per - o));
        }
      });
    }
    for (auto& th : pool) th.join();
    runs.push_back(Rate{static_cast<double>(bytes) / (Now() - t0) / 1e9,
                        static_cast<double>(bytes) / (CpuSeconds() - c0) / 1e9});
  }
  std::free(src);
  std::free(dst);
  return MedianRate(runs);
}

// (a') `threads` threads filling a fresh host-device allocation through HostDevice's copy
// (pwrite into the shm object) from a cache-hot source: the most a load onto a host
// device can reach here, since every byte lands in a newly allocated shmem page.
Rate FreshDeviceFillRate(int threads, uint64_t bytes) {
  char* src = static_cast<char*>(std::aligned_alloc(4096, 64 << 20));
  std::memset(src, 1, 64 << 20);
  loader::HostDevice device(0, bytes + (1 << 20));
  std::vector<Rate> runs;
  for (int r = 0; r < 2; ++r) {
    auto a = device.Allocate(bytes);
    if (!a.ok()) Die(a.status());
    double t0 = Now(), c0 = CpuSeconds();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (uint64_t o = static_cast<uint64_t>(t) * (4 << 20); o < bytes;
             o += static_cast<uint64_t>(threads) * (4 << 20)) {
          uint64_t n = std::min<uint64_t>(4 << 20, bytes - o);
          (void)device.CopyToDeviceAsync(*a, o, src + (o % (60 << 20)), n);
        }
      });
    }
    for (auto& th : pool) th.join();
    runs.push_back(Rate{static_cast<double>(bytes) / (Now() - t0) / 1e9,
                        static_cast<double>(bytes) / (CpuSeconds() - c0) / 1e9});
    (void)device.Free(*a);
  }
  std::free(src);
  return MedianRate(runs);
}

// (a'') `threads` threads memcpy-ing into newly mapped shared memory (an unlinked memfd,
// MAP_SHARED: the kind a host device's allocation is), each page faulted in by the copy,
// from a cache-hot source: the fresh-memory limit of a load that writes through a
// mapping. A new mapping per run, so every run starts from unpopulated pages.
Rate FreshShmMemcpyRate(int threads, uint64_t bytes) {
  char* src = static_cast<char*>(std::aligned_alloc(4096, 64 << 20));
  std::memset(src, 1, 64 << 20);
  std::vector<Rate> runs;
  for (int r = 0; r < 2; ++r) {
    int fd = ::memfd_create("bench-fresh", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      Die(absl::InternalError("memfd_create/ftruncate failed"));
    }
    void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) Die(absl::InternalError("mmap of the memfd failed"));
    char* dst = static_cast<char*>(map);
    double t0 = Now(), c0 = CpuSeconds();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (uint64_t o = static_cast<uint64_t>(t) * (4 << 20); o < bytes;
             o += static_cast<uint64_t>(threads) * (4 << 20)) {
          uint64_t n = std::min<uint64_t>(4 << 20, bytes - o);
          std::memcpy(dst + o, src + (o % (60 << 20)), n);
        }
      });
    }
    for (auto& th : pool) th.join();
    runs.push_back(Rate{static_cast<double>(bytes) / (Now() - t0) / 1e9,
                        static_cast<double>(bytes) / (CpuSeconds() - c0) / 1e9});
    ::munmap(map, bytes);
    ::close(fd);
  }
  std::free(src);
  return MedianRate(runs);
}

// One fill of fresh host-device memory (the memory kind `loadstar load` uses: a new shm
// object per allocation, filled by HostDevice's copy), `threads` threads, cache-hot
// source: the fresh-memory limit of one round, measured right before that round's fresh
// load so both see the same state of the host's free-page reporting (which moves this
// figure 0.4-2 GB/s between minutes).
double FreshFillOnceGbps(int threads, uint64_t bytes) {
  const uint64_t chunk = 4 << 20, src_bytes = 64 << 20;
  char* src = static_cast<char*>(std::aligned_alloc(4096, src_bytes));
  std::memset(src, 1, src_bytes);
  loader::HostDevice device(0, bytes + (1 << 20));
  auto a = device.Allocate(bytes);
  if (!a.ok()) Die(a.status());
  double t0 = Now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (uint64_t o = static_cast<uint64_t>(t) * chunk; o < bytes;
           o += static_cast<uint64_t>(threads) * chunk) {
        auto copied = device.CopyToDeviceAsync(*a, o, src + (o % (src_bytes - chunk)),
                                               std::min(chunk, bytes - o));
        if (!copied.ok()) Die(copied.status());
      }
    });
  }
  for (auto& th : pool) th.join();
  double gbps = static_cast<double>(bytes) / (Now() - t0) / 1e9;
  (void)device.Free(*a);
  std::free(src);
  return gbps;
}

// A worker's device: one pool populated at start (HostDevice::CreatePooled, as
// PipelineInstanceLoader makes them); waits for the population and says how long it took.
std::unique_ptr<loader::HostDevice> PooledDevice(uint64_t bytes) {
  double t0 = Now();
  auto device = loader::HostDevice::CreatePooled(0, bytes);
  if (!device.ok()) Die(device.status());
  absl::Status populated = (*device)->WaitPopulated();
  if (!populated.ok()) Die(populated);
  std::printf("device memory pool of %.2f GiB populated in %.2f s (off the load path)\n",
              static_cast<double>(bytes) / (1ull << 30), Now() - t0);
  return *std::move(device);
}

void DropCaches(const loader::ModelSource& source) {
  absl::Status s = bench::DropCaches(source);
  if (!s.ok()) Die(s);
}

// (b) O_DIRECT sequential read, the limit of a cold load, three ways at the loader's
// threads, queue depth and chunk size; a round's limit is the fastest of them:
//   - fio "split": `threads` jobs (numjobs) of the loader's per-thread queue depth
//     (queue_depth / threads, at least 2, as load_pipeline.cc), each reading its own
//     contiguous part of the file (offset_increment);
//   - fio "one stream": one job at the loader's whole queue depth, reading the file in
//     order, which is what the loader's workers do together (they take chunks in order);
//   - "engine": the loader's io_uring engine alone (no pipeline, no checksums) at the
//     whole depth into a ring of huge pages faulted in up front.
// On this virtio disk (one queue, 254 segments, max_sectors_kb 4096) the destination
// memory decides the request size and so the speed: into fio's physically scattered
// buffers a 4 MiB read reaches the disk as 0.6-1.9 MiB requests and reads 0.7-1.0 GB/s,
// while the loader's reads into its pool (populated in one pass, mostly contiguous) go as
// ~3.8 MiB requests at ~1.7-2 GB/s (/proc/diskstats; the bench prints KiB/request for
// every reader). The huge-page ring gives whole 4 MiB requests: the disk's own limit.
// The disk decides which it prefers and its speed swings from run to run, so every way
// runs in every round next to the cold load.
struct DirectRead {
  double gbps = 0;
  std::string how;
};

// Reads completed and sectors read of the disk holding `path` (/proc/diskstats), so a
// reader's average request size can be printed.
std::pair<uint64_t, uint64_t> DiskReads(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return {0, 0};
  FILE* f = std::fopen("/proc/diskstats", "r");
  if (f == nullptr) return {0, 0};
  unsigned major = 0, minor = 0;
  char name[64];
  unsigned long long reads = 0, merged = 0, sectors = 0;
  std::pair<uint64_t, uint64_t> out{0, 0};
  while (std::fscanf(f, "%u %u %63s %llu %llu %llu%*[^\n]", &major, &minor, name, &reads,
                     &merged, &sectors) == 6) {
    if (major == ::major(st.st_dev) && minor == ::minor(st.st_dev)) out = {reads, sectors};
  }
  std::fclose(f);
  return out;
}

// One fio run over `path`: bytes and seconds, or nullopt when fio fails or prints no JSON.
std::optional<std::pair<uint64_t, double>> FioRead(const std::string& path, int jobs,
                                                   int depth, uint64_t chunk) {
  auto size = Env::Default()->GetFileSize(path);
  if (!size.ok()) Die(size.status());
  // Each job's share, rounded down to whole reads (the last few KiB are not read).
  const uint64_t part = *size / static_cast<uint64_t>(jobs) / chunk * chunk;
  std::string cmd = fmt::format(
      "fio --name=seqread --filename='{}' --readonly --rw=read --direct=1 --bs={} "
      "--iodepth={} --numjobs={} --size={} --offset_increment={} --group_reporting "
      "--ioengine=io_uring --output-format=json 2>/dev/null",
      path, chunk, depth, jobs, part, part);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  if (::pclose(p) != 0) return std::nullopt;
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  const auto& read = j["jobs"][0]["read"];
  // group_reporting: bytes of all jobs, runtime of the longest.
  return std::make_pair(read["io_bytes"].get<uint64_t>(), read["runtime"].get<double>() / 1e3);
}

// The loader's io_uring engine at `depth` reads of `chunk` bytes into a ring of depth x
// chunk bytes of memory faulted in before the clock starts.
double EngineReadSeconds(const std::string& path, int depth, uint64_t chunk,
                         uint64_t* bytes) {
  auto engine = loader::CreateUringIoEngine(depth);
  if (!engine.ok()) Die(engine.status());
  auto file = Env::Default()->NewRandomAccessFile(path, OpenOptions{true});
  if (!file.ok()) Die(file.status());
  const uint64_t ring = static_cast<uint64_t>(depth) * chunk;
  void* mem = ::mmap(nullptr, ring, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) Die(absl::ResourceExhaustedError("mmap of the read ring"));
  // Transparent huge pages where the kernel grants them (THP "madvise"): physically
  // contiguous buffers, so a chunk reaches the disk as one request, as the loader's reads
  // into its pool (populated in one pass) mostly do. Faulted before the clock starts.
  (void)::madvise(mem, ring, MADV_HUGEPAGE);
  std::memset(mem, 0, ring);
  char* buf = static_cast<char*>(mem);
  double t0 = Now();
  for (uint64_t o = 0; o < (*file)->Size(); o += chunk) {
    (*engine)->Submit(loader::ReadRequest{file->get(), o, chunk, buf + (o % ring)},
                      [](absl::StatusOr<size_t>) {});
  }
  engine->reset();  // waits for the reads in flight
  const double seconds = Now() - t0;
  *bytes = (*file)->Size();
  ::munmap(mem, ring);
  return seconds;
}

DirectRead DirectReadLimit(const loader::ModelSource& source, int threads, int depth,
                           uint64_t chunk) {
  struct Way {
    const char* name;
    int jobs, depth;  // jobs == 0: the engine
  };
  const bool fio_ok = std::system("command -v fio >/dev/null 2>&1") == 0;
  std::vector<Way> ways;
  if (fio_ok) {
    ways.push_back({"fio split", threads, depth});
    ways.push_back({"fio one stream", 1, depth * threads});
  }
  ways.push_back({"engine into huge pages", 0, depth * threads});
  DirectRead best;
  std::string all;
  for (const Way& way : ways) {
    uint64_t total = 0, requests = 0, sectors = 0;
    double seconds = 0;
    bool ok = true;
    for (const std::string& path : source.file_paths) {
      DropCaches(source);
      const auto before = DiskReads(path);
      if (way.jobs == 0) {
        uint64_t bytes = 0;
        seconds += EngineReadSeconds(path, way.depth, chunk, &bytes);
        total += bytes;
      } else if (auto r = FioRead(path, way.jobs, way.depth, chunk)) {
        total += r->first;
        seconds += r->second;
      } else {
        ok = false;
        break;
      }
      const auto after = DiskReads(path);
      requests += after.first - before.first;
      sectors += after.second - before.second;
    }
    if (!ok) continue;  // fio failed: the other ways stand
    const double gbps = static_cast<double>(total) / seconds / 1e9;
    all += fmt::format("{}{} {:.2f} GB/s ({:.0f} KiB/request)", all.empty() ? "" : ", ",
                       way.name, gbps,
                       requests ? static_cast<double>(sectors) * 512 / 1024 / requests : 0.0);
    if (gbps > best.gbps) {
      best.gbps = gbps;
      best.how = way.name;
    }
  }
  best.how = fmt::format("best of [{}], bs {} KiB, depth {} (fio split: {} x {})", all,
                         chunk >> 10, depth * threads, threads, depth);
  return best;
}

struct Flags {
  std::string data = "bench/data";
  double gib = 4.25;
  int runs = 3;
  int threads = 0;
  uint64_t chunk_kib = 4096;
};

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (bench::FlagReader r(argc, argv, "bench_load"); r.Next();) {
    if (r.Is("--data")) f.data = r.Value();
    else if (r.Is("--gib")) f.gib = std::stod(r.Value());
    else if (r.Is("--runs")) f.runs = std::stoi(r.Value());
    else if (r.Is("--threads")) f.threads = std::stoi(r.Value());
    else if (r.Is("--chunk-kib")) f.chunk_kib = std::stoull(r.Value());
    else r.Unknown();
  }
  return f;
}

void PrintRow(const char* what, double gbps, double ratio, double target, const char* vs) {
  std::printf("%-34s %7.2f GB/s   %5.2f x %-14s (target >= %.2f) %s\n", what, gbps, ratio, vs,
              target, ratio >= target ? "MET" : "MISSED");
}

int Main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  const std::string ckpt = JoinPath(flags.data, "ckpt");
  const std::string name = "bench-llama";
  auto store = bench::OpenStoreWithLlama(flags.data, ckpt, name, flags.gib);
  if (!store.ok()) Die(store.status());
  auto source = loader::ModelSourceFromStore(**store, name);
  if (!source.ok()) Die(source.status());
  const uint64_t bytes = source->manifest.TotalBytes();

  loader::LoadPipeline::Options options;
  options.threads = flags.threads;
  options.chunk_bytes = flags.chunk_kib << 10;
  auto warm_pipeline = loader::LoadPipeline::Create(options);
  if (!warm_pipeline.ok()) Die(warm_pipeline.status());
  options.io_mode = loader::IoMode::kDirect;
  auto cold_pipeline = loader::LoadPipeline::Create(options);
  if (!cold_pipeline.ok()) Die(cold_pipeline.status());
  const int threads = (*warm_pipeline)->threads();
  std::printf("model %s: %zu tensors, %.2f GiB in %zu file(s); loader threads %d, engine %s\n",
              name.c_str(), source->manifest.tensors.size(),
              static_cast<double>(bytes) / (1ull << 30), source->file_paths.size(), threads,
              (*cold_pipeline)->direct_engine().name().c_str());

  // (a)
  const Rate memcpy_rate = CopyRate(threads, 1ull << 30, GlibcMemcpy);
  const Rate streaming_rate = CopyRate(threads, 1ull << 30, StreamingCopy);
  const Rate verified_rate = CopyRate(threads, 1ull << 30, VerifiedCopy);
  // The copy limit is the faster of the two copies (a load that beats glibc's memcpy with
  // streaming stores beats no limit).
  const Rate copy_rate = streaming_rate.gbps > memcpy_rate.gbps ? streaming_rate : memcpy_rate;
  const Rate fill_rate = FreshDeviceFillRate(threads, bytes);
  const Rate fresh_memcpy_rate = FreshShmMemcpyRate(threads, bytes);
  const double memcpy_gbps = memcpy_rate.gbps, fill_gbps = fill_rate.gbps;
  const double fresh_memcpy_gbps = fresh_memcpy_rate.gbps;
  const int per_thread_depth = std::max(2, options.io.queue_depth / threads);
  std::string direct_how;

  // A worker's device keeps its memory between models (a pooled device, as the worker's),
  // as a GPU's memory stays put; "fresh" is a new device whose pages the kernel must
  // allocate (what `loadstar load`, a fresh process, gets).
  const uint64_t device_bytes = bytes + (64ull << 20) * source->manifest.tensors.size();
  // The pool needs only the plan's 4 KiB alignment padding on top of the model.
  std::unique_ptr<loader::HostDevice> pooled =
      PooledDevice(bytes + (1ull << 20) * source->manifest.tensors.size());
  loader::HostDevice& device = *pooled;
  auto load = [&](loader::LoadPipeline& pipeline, loader::Device& dev, bool cold,
                  std::string* io) {
    if (cold) DropCaches(*source);
    loader::LoadStats stats;
    double c0 = CpuSeconds();
    auto model = pipeline.Load(*source, {&dev}, loader::PlanOptions{}, nullptr, {}, &stats);
    if (!model.ok()) Die(model.status());
    double cpu = CpuSeconds() - c0;
    *io = stats.io;
    return Rate{stats.gbps, static_cast<double>(stats.bytes) / cpu / 1e9};
  };
  // Warm the page cache (the pool is populated already): from then on loads are in
  // steady state.
  {
    std::string io;
    auto o = options;
    o.io_mode = loader::IoMode::kBuffered;
    auto p = loader::LoadPipeline::Create(o);
    if (!p.ok()) Die(p.status());
    load(**p, device, false, &io);
  }
  std::vector<Rate> warm_rates, fresh_rates, cold_rates;
  std::vector<double> warm, fresh, cold;
  std::string warm_io, fresh_io, cold_io;
  for (int r = 0; r < flags.runs; ++r) {
    warm_rates.push_back(load(**warm_pipeline, device, false, &warm_io));
    warm.push_back(warm_rates.back().gbps);
  }
  // Fresh loads alternate with fresh fills (the limit), ratio = median of per-round ones.
  std::vector<double> fresh_fill, fresh_ratios;
  for (int r = 0; r < flags.runs; ++r) {
    fresh_fill.push_back(FreshFillOnceGbps(threads, bytes));
    loader::HostDevice fresh_device(0, device_bytes);
    fresh_rates.push_back(load(**warm_pipeline, fresh_device, false, &fresh_io));
    fresh.push_back(fresh_rates.back().gbps);
    fresh_ratios.push_back(fresh.back() / fresh_fill.back());
  }
  // (b) and (d) alternate, so a drift in the (virtual) disk's speed hits both alike, and
  // take turns going first (so neither always reads right after the other); the ratio is
  // the median of per-round ratios.
  std::vector<double> direct, cold_ratios;
  for (int r = 0; r < flags.runs; ++r) {
    auto limit = [&] {
      DirectRead d = DirectReadLimit(*source, threads, per_thread_depth, options.chunk_bytes);
      direct.push_back(d.gbps);
      direct_how = d.how;
      std::printf("  round %d O_DIRECT limit: %s\n", r, d.how.c_str());
    };
    if (r % 2 == 0) limit();
    const auto before = DiskReads(source->file_paths[0]);
    cold_rates.push_back(load(**cold_pipeline, device, true, &cold_io));
    const auto after = DiskReads(source->file_paths[0]);
    if (r % 2 == 1) limit();
    cold.push_back(cold_rates.back().gbps);
    cold_ratios.push_back(cold.back() / direct.back());
    const uint64_t requests = after.first - before.first;
    std::printf("  round %d cold load %.2f GB/s (%.0f MiB read from the disk, %.0f "
                "KiB/request) = %.2f x the limit\n",
                r, cold.back(), (after.second - before.second) * 512.0 / (1 << 20),
                requests ? (after.second - before.second) * 512.0 / 1024 / requests : 0.0,
                cold_ratios.back());
  }
  const double direct_gbps = Median(direct);
  const Rate warm_rate = MedianRate(warm_rates), fresh_rate = MedianRate(fresh_rates);
  const double warm_gbps = Median(warm), fresh_gbps = Median(fresh), cold_gbps = Median(cold);

  std::printf("\n(a) memcpy, %d threads, pre-faulted     %7.2f GB/s\n", threads, memcpy_gbps);
  std::printf("(a*) streaming-store copy (%s)     %7.2f GB/s  (same threads and buffers)\n",
              CopyAroundCacheKind(), streaming_rate.gbps);
  std::printf("(a**) XXH3 + streaming copy, 512 KiB  %7.2f GB/s  (the least a verified copy "
              "does)\n", verified_rate.gbps);
  std::printf("(a') fill of fresh host-device memory     %7.2f GB/s  (HostDevice copy into "
              "new shm pages)\n",
              fill_gbps);
  std::printf("(a'') memcpy into fresh shared memory      %7.2f GB/s  (%d threads, new memfd "
              "mapping, faulted by the copy)\n",
              fresh_memcpy_gbps, threads);
  std::printf("(b) O_DIRECT sequential read            %7.2f GB/s  (%s; median of %d)\n",
              direct_gbps, direct_how.c_str(), flags.runs);
  std::printf("(c) warm load, device memory reused, median of %d [%s]\n", flags.runs,
              warm_io.c_str());
  PrintRow("    vs the fastest copy", warm_gbps, warm_gbps / copy_rate.gbps, 0.85, "copy");
  PrintRow("    vs glibc memcpy", warm_gbps, warm_gbps / memcpy_gbps, 0.85, "memcpy");
  PrintRow("    vs hash + streaming copy", warm_gbps, warm_gbps / verified_rate.gbps, 0.85,
           "verified copy");
  std::printf("    per CPU-second: load %.2f GB, fastest copy %.2f GB (%.2f x)\n",
              warm_rate.gb_per_cpu, copy_rate.gb_per_cpu,
              warm_rate.gb_per_cpu / copy_rate.gb_per_cpu);
  std::printf("(c') warm load into fresh device memory, median of %d [%s]\n", flags.runs,
              fresh_io.c_str());
  PrintRow("    vs memcpy", fresh_gbps, fresh_gbps / memcpy_gbps, 0.85, "memcpy");
  PrintRow("    vs fresh-memory memcpy", fresh_gbps, fresh_gbps / fresh_memcpy_gbps, 0.85,
           "fresh memcpy");
  PrintRow("    vs host-device fill", fresh_gbps, fresh_gbps / fill_gbps, 0.85, "fill");
  PrintRow("    vs fill, same round", fresh_gbps, Median(fresh_ratios), 0.90, "fresh fill");
  std::string fills;
  for (double f : fresh_fill) fills += fmt::format(" {:.2f}", f);
  std::printf("    fresh fills of those rounds:%s GB/s\n", fills.c_str());
  std::printf("    per CPU-second: load %.2f GB, fill %.2f GB (%.2f x)\n",
              fresh_rate.gb_per_cpu, fill_rate.gb_per_cpu,
              fresh_rate.gb_per_cpu / fill_rate.gb_per_cpu);
  std::printf("(d) cold load, median of %d [%s]\n", flags.runs, cold_io.c_str());
  PrintRow("    vs O_DIRECT read", cold_gbps, Median(cold_ratios), 0.90, "O_DIRECT");
  nlohmann::json out = {{"bytes", bytes},
                        {"threads", threads},
                        {"memcpy_gbps", memcpy_gbps},
                        {"streaming_copy_gbps", streaming_rate.gbps},
                        {"verified_copy_gbps", verified_rate.gbps},
                        {"warm_ratio_copy", warm_gbps / copy_rate.gbps},
                        {"warm_ratio_verified_copy", warm_gbps / verified_rate.gbps},
                        {"shm_fill_gbps", fill_gbps},
                        {"fresh_memcpy_gbps", fresh_memcpy_gbps},
                        {"fresh_ratio_fresh_memcpy", fresh_gbps / fresh_memcpy_gbps},
                        {"direct_read_how", direct_how},
                        {"direct_read_gbps", direct_gbps},
                        {"warm_gbps", warm},
                        {"fresh_gbps", fresh},
                        {"fresh_ratio_fill", fresh_gbps / fill_gbps},
                        {"fresh_round_fill_gbps", fresh_fill},
                        {"fresh_ratio_round_fill", Median(fresh_ratios)},
                        {"fresh_gb_per_cpu_s", fresh_rate.gb_per_cpu},
                        {"cold_gbps", cold},
                        {"warm_ratio_memcpy", warm_gbps / memcpy_gbps},
                        {"direct_read_runs_gbps", direct},
                        {"cold_ratio_direct", Median(cold_ratios)},
                        {"memcpy_gb_per_cpu_s", memcpy_rate.gb_per_cpu},
                        {"fill_gb_per_cpu_s", fill_rate.gb_per_cpu},
                        {"warm_gb_per_cpu_s", warm_rate.gb_per_cpu}};
  std::printf("\njson: %s\n", out.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace loadstar

int main(int argc, char** argv) { return loadstar::Main(argc, argv); }
