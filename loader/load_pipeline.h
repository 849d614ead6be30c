// LoadPipeline: streams a model from the store (or the host cache) onto devices.
//
//   disk --(IoEngine: io_uring + O_DIRECT, or buffered pread)--> buffer --xxh3--> device
//
// Work is split into jobs of one checksum piece (store::kChecksumChunkBytes) each, or one
// whole tensor when it is transformed (the transform must see its chunks in order).
// `threads` workers take jobs in file order; each keeps up to queue_depth/threads reads
// in flight across job boundaries, verifies every chunk as it completes (hashing in order
// within a piece) and copies it to its device. Buffers:
//  - ring: chunks land in a slot of the PinnedRing (bounded staging memory, reused, so
//    the model may be any size), are verified there while hot in cache, then copied to
//    the device (or fed to the transform, or scattered to tensor-parallel shards) and the
//    slot is released;
//  - in place (Options::in_place_reads, host-cache inserts, and every buffered read into
//    a host device: resident pool memory, or fresh shm whose pages each chunk populates
//    first): an untransformed, unsharded tensor on host-addressable memory is read
//    straight into its destination (its offset is 4 KiB-aligned by the plan) and
//    verified there;
//  - mapped (buffered reads into resident memory, Options::kept_mapping_bytes): the same
//    tensors read from a mapping of the store file kept across loads
//    (loader/file_mappings.h): each piece is hashed in the page cache and then copied
//    with streaming stores (base/streaming_copy.h), one read and one write of memory;
//  - cache: a model in the HostCache is copied from there; it was verified when inserted.
//
// Admission (ServerlessLLM's multi-tier loading): a load that reads a model from disk with
// a HostCache set (and PlanOptions::admit_to_cache, the default) takes a
// HostCache::Admission for source.key and reads every chunk of source bytes into its
// place in the entry instead of a ring slot (a tensor read in place into a host device is
// copied there after verification); chunks are verified there, then delivered or
// transformed from there. The entry is committed only when the whole load succeeded. A model that cannot fit (or is already being read into
// the cache) is loaded without admission: the cache never makes a load fail. Not with
// verify_checksums off, nor when the plan leaves tensors out.
//
// I/O mode: kDirect opens data files with O_DIRECT (the kernel DMAs into our buffers; the
// right choice when the page cache is cold); kBuffered reads through the page cache with
// pread on the workers themselves (a page-cache hit is then one memcpy on the worker's
// core); kAuto asks mincore() how much of each file is resident and picks buffered when
// at least half is.
//
// Failure: a checksum mismatch is DATA_LOSS naming the tensor and the file; cancellation
// (checked between chunks) is CANCELLED; on any error every allocation of the load is
// freed before Load returns, so nothing half-loaded is ever visible.
//
// Thread safety: Load may be called concurrently (loads share the engine and the ring).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "loader/device.h"
#include "loader/file_mappings.h"
#include "loader/host_cache.h"
#include "loader/io_engine.h"
#include "loader/load_plan.h"
#include "loader/loaded_model.h"
#include "loader/model_source.h"
#include "loader/pinned_ring.h"
#include "loader/spread.h"

namespace loadstar::loader {

enum class IoMode { kAuto, kDirect, kBuffered };

// Set from any thread; the load notices between chunks.
class CancellationToken {
 public:
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

struct LoadProgress {
  uint64_t bytes = 0;  // source bytes verified and placed so far
  uint64_t total_bytes = 0;
  int tensors = 0;  // source tensors complete
  int total_tensors = 0;
  double seconds = 0;
  double gbps = 0;  // bytes / seconds / 1e9
};

// Called at most every 100 ms and once at the end, from pipeline threads, never
// concurrently with itself.
using LoadProgressCallback = std::function<void(const LoadProgress&)>;

struct LoadStats {
  uint64_t bytes = 0;
  int tensors = 0;
  double seconds = 0;
  double gbps = 0;
  bool from_cache = false;
  bool admitted = false;  // read from disk and left in the host cache
  std::string io;  // "io_uring+direct", "pread+buffered", "cache", ...
  // Multi-device loads: "per_device" or "staged" (loader/spread.h); "" on one device.
  std::string spread;
};

class LoadPipeline final : public UncachedModelReader {
 public:
  struct Options {
    Env* env = nullptr;  // nullptr: Env::Default()
    // Workers; 0: the number of cores, at least 2.
    int threads = 0;
    IoEngineOptions io;  // engine for O_DIRECT reads (io_uring by default)
    IoMode io_mode = IoMode::kAuto;
    // Read size, and the ring's slot size: a multiple of 4 KiB.
    uint64_t chunk_bytes = 4ull << 20;
    uint64_t ring_bytes = 256ull << 20;
    HostMemoryAllocator* ring_allocator = nullptr;  // nullptr: aligned_alloc
    // Read untransformed, unsharded tensors straight into host-device memory instead of
    // staging them in the ring, also O_DIRECT ones (whose reads then pin the destination's
    // 4 KiB pages one by one: slower than the ring's huge pages, so off by default; buffered
    // reads into host devices go in place anyway). Host-cache inserts (anonymous huge-page
    // memory) always read in place.
    bool in_place_reads = false;
    bool verify_checksums = true;
    HostCache* cache = nullptr;  // consulted first when set
    // Buffered reads into resident host memory (a worker's pooled device) go through
    // read-only mappings of the store files, kept across loads (loader/file_mappings.h):
    // each piece is hashed in the page cache and copied with streaming stores. At most
    // this many bytes stay mapped; 0 never maps (pread); -1: the machine's memory.
    int64_t kept_mapping_bytes = -1;
  };

  static absl::StatusOr<std::unique_ptr<LoadPipeline>> Create(const Options& options);
  ~LoadPipeline() override;

  // Loads `source` onto `devices` (not owned; they must outlive the result) as
  // `plan_options` places it.
  absl::StatusOr<std::unique_ptr<LoadedModel>> Load(
      const ModelSource& source, const std::vector<Device*>& devices,
      const PlanOptions& plan_options, const CancellationToken* cancel = nullptr,
      const LoadProgressCallback& progress = {}, LoadStats* stats = nullptr);

  // Same, with a plan made by the caller (MakeLoadPlan); the plan must come from
  // source.manifest and devices.size(). `spread` (nullptr: per device) and
  // `admit_to_cache` as PlanOptions::spread and PlanOptions::admit_to_cache.
  absl::StatusOr<std::unique_ptr<LoadedModel>> LoadWithPlan(
      const ModelSource& source, const std::vector<Device*>& devices, const LoadPlan& plan,
      TransformProvider* transform, const CancellationToken* cancel = nullptr,
      const LoadProgressCallback& progress = {}, LoadStats* stats = nullptr,
      const SpreadOptions* spread = nullptr, bool admit_to_cache = true);

  // UncachedModelReader, for HostCache::Prefetch: a load that skips the cache and reads
  // in place (cache memory is resident host memory).
  absl::StatusOr<std::unique_ptr<LoadedModel>> ReadUncached(const ModelSource& source,
                                                            Device* memory,
                                                            const LoadPlan& plan) override;

  const Options& options() const { return options_; }
  int threads() const { return threads_; }
  PinnedRing& ring() { return *ring_; }
  // nullptr when kept_mapping_bytes is 0.
  FileMappings* file_mappings() { return mappings_.get(); }
  IoEngine& direct_engine() { return *direct_engine_; }

 private:
  class Run;

  LoadPipeline(const Options& options, int threads, std::unique_ptr<IoEngine> direct_engine,
               std::unique_ptr<IoEngine> inline_engine, std::unique_ptr<PinnedRing> ring);
  absl::StatusOr<std::unique_ptr<LoadedModel>> LoadImpl(
      const ModelSource& source, const std::vector<Device*>& devices, const LoadPlan& plan,
      TransformProvider* transform, const CancellationToken* cancel,
      const LoadProgressCallback& progress, LoadStats* stats, bool use_cache, bool admit,
      bool in_place, const SpreadOptions* spread = nullptr);

  const Options options_;
  const int threads_;
  std::unique_ptr<IoEngine> direct_engine_;  // deep queue, for O_DIRECT files
  std::unique_ptr<IoEngine> inline_engine_;  // pread on the worker, for buffered files
  std::unique_ptr<PinnedRing> ring_;
  std::unique_ptr<FileMappings> mappings_;
};

// Drops the clean page-cache pages of `source`'s data files (posix_fadvise DONTNEED), so
// the next load reads from disk. Works unprivileged.
absl::Status DropFromPageCache(const ModelSource& source);

// Fraction [0, 1] of a file's pages in the page cache (mincore); 0 when unknown.
double PageCacheResidency(const std::string& path);

}  // namespace loadstar::loader
