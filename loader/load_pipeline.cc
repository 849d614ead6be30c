#include "loader/load_pipeline.h"

#define XXH_STATIC_LINKING_ONLY
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxh_x86dispatch.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "base/streaming_copy.h"
#include "loader/host_cache.h"
#include "loader/tensor_transform.h"
#include "spdlog/spdlog.h"

namespace loadstar::loader {
namespace {

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// The size of one buffered read into resident device memory: read, then hashed while it
// is still in L2 (1 MiB per core on the machines we measured; half leaves room for the
// page-cache side of the copy). Larger reads are hashed from L3 or DRAM: a second pass.
// Mapped chunks (fresh host memory) use the same size.
constexpr uint64_t kInPlaceReadBytes = 512ull << 10;

// Whether `plan` reads every tensor of `manifest` (a plan may leave tensors out).
bool PlanCoversManifest(const LoadPlan& plan, const store::Manifest& manifest) {
  std::vector<bool> read(manifest.tensors.size(), false);
  for (const PlannedTensor& t : plan.tensors) {
    if (t.source >= 0 && static_cast<size_t>(t.source) < read.size()) read[t.source] = true;
  }
  return std::all_of(read.begin(), read.end(), [](bool r) { return r; });
}

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Writes a transformed tensor's output to its place on a device.
class DeviceOutputWriter final : public OutputWriter {
 public:
  DeviceOutputWriter(Device* device, const Allocation& allocation, uint64_t offset,
                     uint64_t size, const std::string& tensor)
      : device_(device), allocation_(allocation), offset_(offset), size_(size),
        tensor_(tensor) {}

  absl::Status Write(uint64_t offset, const void* data, uint64_t bytes) override {
    if (offset > size_ || bytes > size_ - offset) {
      return absl::OutOfRangeError(absl::StrCat("transform of ", tensor_, " wrote [", offset,
                                                ", +", bytes, ") past its ", size_,
                                                "-byte output"));
    }
    ASSIGN_OR_RETURN(CopyTicket ticket,
                     device_->CopyToDeviceAsync(allocation_, offset_ + offset, data, bytes));
    // Contract 3 of tensor_transform.h: the caller may reuse `data` once we return.
    return device_->Wait(ticket);
  }
  Device* device() const override { return device_; }

 private:
  Device* device_;
  Allocation allocation_;
  uint64_t offset_;
  uint64_t size_;
  const std::string& tensor_;
};

}  // namespace

// One load: the shared state of its workers.
class LoadPipeline::Run {
 public:
  Run(LoadPipeline* pipeline, const ModelSource& source, const std::vector<Device*>& devices,
      const LoadPlan& plan, TransformProvider* transform, const CancellationToken* cancel,
      const LoadProgressCallback& progress, const HostCache::Handle* cached,
      HostCache::Admission* admission, bool in_place, const SpreadOptions* spread)
      : p_(*pipeline), in_place_(in_place), source_(source), manifest_(source.manifest), devices_(devices),
        plan_(plan), transform_(transform), cancel_(cancel), progress_(progress),
        cached_(cached), admission_(admission),
        staged_(spread != nullptr && spread->path == SpreadPath::kStaged && devices.size() > 1),
        spread_(spread) {}
  ~Run();

  absl::Status Execute();
  std::vector<Allocation> TakeAllocations() { return std::move(allocations_); }
  std::string io_description() const { return io_; }

 private:
  struct SourceTensor {
    std::vector<int> outputs;  // indices into plan_.tensors
    bool in_place = false;
    // Read in place into memory that is not resident yet: each chunk's destination range
    // is prepared first (Device::PrepareInPlaceWrite), then the read lands there.
    bool prepare_first = false;
    // Read in place into resident memory through the file's kept mapping: each chunk is
    // hashed in the page cache and copied with streaming stores (loader/file_mappings.h).
    bool mapped = false;
    bool transformed = false;
    std::atomic<uint64_t> pieces_left{0};
  };
  // A run of whole checksum pieces of one tensor, handled by one worker in order.
  struct Job {
    int source = 0;
    uint64_t first_piece = 0;
    uint64_t end_piece = 0;
  };
  // A job a worker has claimed: its position and its streaming state.
  struct ActiveJob {
    const Job* job = nullptr;
    uint64_t next = 0;  // next source byte to submit
    uint64_t end = 0;
    XXH3_state_t hash;
    // A transformed tensor: one transform and writer per output (per shard under tensor
    // parallelism, tensor_transform.h contract 5), parallel to SourceTensor::outputs.
    std::vector<std::unique_ptr<TensorTransform>> transforms;
    std::vector<std::unique_ptr<DeviceOutputWriter>> writers;
    std::string gather;  // a shard's bytes of one chunk, gathered for its transform
  };
  struct Chunk {
    ActiveJob* job = nullptr;
    uint64_t pos = 0;     // byte offset in the source tensor
    uint64_t length = 0;  // source bytes
    uint64_t piece = 0;
    bool ends_piece = false;
    bool ends_job = false;
    char* data = nullptr;
    // Mapped chunks: the source bytes in the page cache, hashed there and copied to `data`.
    const char* mapped = nullptr;
    std::optional<PinnedRing::Slot> slot;
    bool done = false;  // guarded by the worker's mutex
    absl::StatusOr<size_t> result;
  };

  absl::Status Allocate();
  absl::Status OpenFiles();
  // Takes the kept mappings of the files that mapped tensors read; a file that cannot be
  // mapped reads its tensors with pread.
  absl::Status MapFiles();
  // True when the mapped source range [at, at+n) of file `file` can be read without a
  // fault that could fail: in the page cache, or populated now. False: read it with pread
  // (which reports the error, or the short read past the end of the file).
  bool MappedRangeReadable(int file, uint64_t at, uint64_t n) const;
  void Worker();
  absl::Status Stream();
  // The next job, or nullptr when there are none left.
  absl::StatusOr<std::unique_ptr<ActiveJob>> Claim();
  absl::Status FinishChunk(Chunk& chunk);
  absl::Status FinishJob(ActiveJob& job);
  absl::Status Deliver(int source, const Chunk& chunk);
  absl::Status Transform(ActiveJob& job, const Chunk& chunk);
  // The staged path (loader/spread.h) for a chunk with bytes for a device other than 0.
  absl::Status DeliverStaged(int source, const Chunk& chunk);
  absl::StatusOr<Allocation> AcquireStaging();
  void ReleaseStaging(const Allocation& a);
  absl::Status CopyOut(const PlannedTensor& out, uint64_t out_offset, const char* src,
                       uint64_t bytes, std::vector<std::pair<Device*, CopyTicket>>* tickets);
  void Fail(absl::Status status);
  bool Stopped() const {
    return failed_.load(std::memory_order_relaxed) || (cancel_ && cancel_->cancelled());
  }
  void Report(uint64_t bytes, bool tensor_done, bool final);

  LoadPipeline& p_;
  const bool in_place_;
  const ModelSource& source_;
  const store::Manifest& manifest_;
  const std::vector<Device*>& devices_;
  const LoadPlan& plan_;
  TransformProvider* transform_;
  const CancellationToken* cancel_;
  const LoadProgressCallback& progress_;
  const HostCache::Handle* cached_;
  // Reading from disk with admission: every verified chunk is also copied here.
  HostCache::Admission* admission_;
  const bool staged_;
  const SpreadOptions* spread_;
  std::string io_;

  // Staging buffers on device 0 for the staged path, one ring slot each.
  absl::Mutex staging_mu_;
  std::vector<Allocation> staging_all_ ABSL_GUARDED_BY(staging_mu_);
  std::vector<Allocation> staging_free_ ABSL_GUARDED_BY(staging_mu_);

  std::vector<Allocation> allocations_;
  std::vector<std::unique_ptr<RandomAccessFile>> files_;
  // Per file: its kept mapping when a tensor of it reads mapped, and whether this load made
  // it (its page tables are then empty: chunks are populated, not checked).
  std::vector<std::shared_ptr<const FileMapping>> mappings_;
  std::vector<char> mapping_made_;
  bool any_direct_ = false;
  std::vector<SourceTensor> tensors_;
  std::vector<Job> jobs_;
  std::atomic<size_t> next_job_{0};

  std::atomic<bool> failed_{false};
  absl::Mutex error_mu_;
  absl::Status error_ ABSL_GUARDED_BY(error_mu_);

  double start_ = 0;
  std::atomic<uint64_t> bytes_done_{0};
  std::atomic<int> tensors_done_{0};
  absl::Mutex progress_mu_;
  double last_report_ ABSL_GUARDED_BY(progress_mu_) = 0;
};

void LoadPipeline::Run::Fail(absl::Status status) {
  absl::MutexLock lock(&error_mu_);
  if (error_.ok()) error_ = std::move(status);
  failed_.store(true, std::memory_order_relaxed);
}

void LoadPipeline::Run::Report(uint64_t bytes, bool tensor_done, bool final) {
  uint64_t done = bytes_done_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  int tensors = tensors_done_.fetch_add(tensor_done ? 1 : 0, std::memory_order_relaxed) +
                (tensor_done ? 1 : 0);
  if (!progress_) return;
  double now = NowSeconds();
  absl::MutexLock lock(&progress_mu_);
  if (!final && now - last_report_ < 0.1) return;
  last_report_ = now;
  LoadProgress pr;
  pr.bytes = done;
  pr.total_bytes = plan_.source_bytes;
  pr.tensors = tensors;
  pr.total_tensors = static_cast<int>(manifest_.tensors.size());
  pr.seconds = now - start_;
  pr.gbps = pr.seconds > 0 ? static_cast<double>(done) / pr.seconds / 1e9 : 0;
  progress_(pr);
}

absl::Status LoadPipeline::Run::Allocate() {
  allocations_.assign(devices_.size(), Allocation{});
  for (size_t d = 0; d < devices_.size(); ++d) {
    if (plan_.device_bytes[d] == 0) continue;
    absl::StatusOr<Allocation> a = devices_[d]->Allocate(plan_.device_bytes[d]);
    if (!a.ok()) {
      return absl::Status(a.status().code(),
                          absl::StrCat("loading ", source_.key, ": ",
                                       std::string(a.status().message())));
    }
    allocations_[d] = *a;
  }
  return absl::OkStatus();
}

absl::Status LoadPipeline::Run::OpenFiles() {
  Env* env = p_.options_.env;
  int direct = 0;
  for (const std::string& path : source_.file_paths) {
    bool want_direct = p_.options_.io_mode == IoMode::kDirect ||
                       (p_.options_.io_mode == IoMode::kAuto && PageCacheResidency(path) < 0.5);
    ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                     env->NewRandomAccessFile(path, OpenOptions{want_direct}));
    if (file->direct()) ++direct;
    any_direct_ = any_direct_ || file->direct();
    files_.push_back(std::move(file));
  }
  io_ = direct == 0 ? "pread+buffered"
        : direct == static_cast<int>(files_.size())
            ? absl::StrCat(p_.direct_engine_->name(), "+direct")
            : absl::StrCat(p_.direct_engine_->name(), "+direct/pread+buffered");
  return absl::OkStatus();
}

absl::Status LoadPipeline::Run::MapFiles() {
  mappings_.assign(files_.size(), nullptr);
  mapping_made_.assign(files_.size(), 0);
  std::vector<char> wanted(files_.size(), 0);
  for (size_t s = 0; s < tensors_.size(); ++s) {
    if (tensors_[s].mapped) wanted[manifest_.tensors[s].file] = 1;
  }
  for (size_t f = 0; f < files_.size(); ++f) {
    if (!wanted[f]) continue;
    bool made = false;
    mappings_[f] = p_.mappings_->Acquire(*files_[f], &made);
    mapping_made_[f] = made;
  }
  bool any = false;
  for (size_t s = 0; s < tensors_.size(); ++s) {
    SourceTensor& st = tensors_[s];
    st.mapped = st.mapped && mappings_[manifest_.tensors[s].file] != nullptr;
    any = any || st.mapped;
  }
  if (any) absl::StrAppend(&io_, "+mapped");
  return absl::OkStatus();
}

bool LoadPipeline::Run::MappedRangeReadable(int file, uint64_t at, uint64_t n) const {
  const FileMapping& m = *mappings_[file];
  if (at + n > m.size() || n == 0) return false;
  constexpr uint64_t kPage = 4096;
  const uint64_t begin = at / kPage * kPage, end = at + n;
  char* base = const_cast<char*>(m.data());
  if (!mapping_made_[file]) {
    // A kept mapping: pages still in the page cache need no read (a fault on them only
    // maps them); if any was evicted, populate below reads it and reports a failure.
    unsigned char vec[256];
    bool resident = true;
    for (uint64_t p = begin; p < end && resident; p += sizeof(vec) * kPage) {
      const uint64_t len = std::min<uint64_t>(sizeof(vec) * kPage, end - p);
      if (::mincore(base + p, len, vec) != 0) return false;
      for (uint64_t i = 0; i < (len + kPage - 1) / kPage; ++i) resident = resident && (vec[i] & 1);
    }
    if (resident) return true;
  }
  // New page tables: MADV_POPULATE_READ maps (and if need be reads) the whole range in one
  // call, where faults would map 16 pages at a time, and fails instead of raising SIGBUS.
  return ::madvise(base + begin, end - begin, MADV_POPULATE_READ) == 0;
}

LoadPipeline::Run::~Run() {
  absl::MutexLock lock(&staging_mu_);
  for (const Allocation& a : staging_all_) devices_[0]->Free(a).IgnoreError();
}

absl::Status LoadPipeline::Run::Execute() {
  start_ = NowSeconds();
  if (staged_) {
    if (spread_->communicator == nullptr || spread_->ranks.size() != devices_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the staged spread path needs a communicator and one rank per device (",
          devices_.size(), " devices, ", spread_->ranks.size(), " ranks)"));
    }
    for (int r : spread_->ranks) {
      if (r < 0 || r >= spread_->communicator->size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rank ", r, " is outside the communicator's ", spread_->communicator->size()));
      }
    }
  }
  if (plan_.num_devices != static_cast<int>(devices_.size()) ||
      plan_.device_bytes.size() != devices_.size()) {
    return absl::InvalidArgumentError("load plan does not match the devices");
  }
  if (manifest_.files.size() != source_.file_paths.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_.key, ": manifest lists ", manifest_.files.size(),
                     " files but the source has ", source_.file_paths.size(), " paths"));
  }
  RETURN_IF_ERROR(Allocate());
  if (cached_ == nullptr) {
    RETURN_IF_ERROR(OpenFiles());
  } else {
    io_ = "cache";
  }

  // Route each source tensor to its outputs, and cut the work into jobs.
  tensors_ = std::vector<SourceTensor>(manifest_.tensors.size());
  for (size_t i = 0; i < plan_.tensors.size(); ++i) {
    tensors_[plan_.tensors[i].source].outputs.push_back(static_cast<int>(i));
  }
  const uint64_t piece = store::kChecksumChunkBytes;
  for (size_t s = 0; s < tensors_.size(); ++s) {
    SourceTensor& st = tensors_[s];
    const store::ManifestTensor& mt = manifest_.tensors[s];
    if (st.outputs.empty()) continue;  // a plan may leave a tensor out
    const PlannedTensor& first = plan_.tensors[st.outputs[0]];
    st.transformed = first.transformed;
    // Reading in place pays off for buffered reads into resident memory (one copy
    // instead of two). O_DIRECT reads into it would pin its 4 KiB pages one by one on
    // every submission, which is slower than landing in the ring's huge pages.
    const bool resident_target =
        cached_ == nullptr && !files_[mt.file]->direct() &&
        devices_[first.device]->ReadsInPlace(allocations_[first.device]);
    // Buffered reads into fresh host memory go in place too, each chunk's pages populated
    // first: one copy (the page cache's into the device), where the ring path copies
    // twice and a read through a mapping of the file paid page-table work for both sides
    // (4 GiB warm: 1.07-1.11 GB/s through the ring, 0.72-1.02 mapped). Not while
    // admitting: those chunks are read into the cache entry, which is the one copy.
    const bool fresh_host_target = cached_ == nullptr && admission_ == nullptr &&
                                   !files_[mt.file]->direct() && !resident_target;
    // The staged path sends every byte through device 0, so only its tensors read in place.
    st.in_place = (in_place_ || resident_target || fresh_host_target) && cached_ == nullptr &&
                  !st.transformed &&
                  (!staged_ || first.device == 0) &&
                  st.outputs.size() == 1 && first.shard_kind == ShardKind::kWhole &&
                  devices_[first.device]->kind() == DeviceKind::kHost &&
                  first.offset % kDirectIoAlignment == 0 &&
                  reinterpret_cast<uintptr_t>(allocations_[first.device].ptr) %
                          kDirectIoAlignment == 0;
    st.prepare_first = st.in_place && !resident_target;
    st.mapped = st.in_place && resident_target && p_.mappings_ != nullptr;
    uint64_t pieces = std::max<uint64_t>(1, (mt.size + piece - 1) / piece);
    if (mt.checksums.size() != pieces) {
      return absl::DataLossError(absl::StrCat(source_.key, ": tensor ", mt.name, " has ",
                                              mt.checksums.size(), " checksums; expected ",
                                              pieces));
    }
    st.pieces_left.store(pieces);
    if (st.transformed) {
      jobs_.push_back(Job{static_cast<int>(s), 0, pieces});
    } else {
      for (uint64_t k = 0; k < pieces; ++k) jobs_.push_back(Job{static_cast<int>(s), k, k + 1});
    }
  }

  RETURN_IF_ERROR(MapFiles());

  int workers = static_cast<int>(std::min<size_t>(p_.threads_, jobs_.size()));
  std::vector<std::thread> threads;
  for (int i = 1; i < workers; ++i) threads.emplace_back([this] { Worker(); });
  if (workers > 0) Worker();  // the calling thread is a worker too
  for (std::thread& t : threads) t.join();

  absl::MutexLock lock(&error_mu_);
  if (!error_.ok()) return error_;
  if (cancel_ && cancel_->cancelled()) {
    return absl::CancelledError(absl::StrCat("load of ", source_.key, " was cancelled"));
  }
  return absl::OkStatus();
}

void LoadPipeline::Run::Worker() {
  absl::Status status = Stream();
  if (!status.ok()) Fail(std::move(status));
}

absl::StatusOr<std::unique_ptr<LoadPipeline::Run::ActiveJob>> LoadPipeline::Run::Claim() {
  size_t j = next_job_.fetch_add(1, std::memory_order_relaxed);
  if (j >= jobs_.size()) return std::unique_ptr<ActiveJob>();
  auto aj = std::make_unique<ActiveJob>();
  aj->job = &jobs_[j];
  const store::ManifestTensor& mt = manifest_.tensors[aj->job->source];
  const SourceTensor& st = tensors_[aj->job->source];
  const PlannedTensor& first = plan_.tensors[st.outputs[0]];
  const uint64_t piece = store::kChecksumChunkBytes;
  aj->next = aj->job->first_piece * piece;
  aj->end = std::min(mt.size, aj->job->end_piece * piece);
  XXH3_64bits_reset(&aj->hash);
  if (cached_ == nullptr) {
    const RandomAccessFile* file = files_[mt.file].get();
    if (mt.offset > file->Size() || mt.size > file->Size() - mt.offset) {
      return absl::DataLossError(absl::StrCat("tensor ", mt.name, " extends past the end of ",
                                              file->path(), " (", file->Size(),
                                              " bytes); file truncated?"));
    }
  }
  if (st.transformed) {
    for (int o : st.outputs) {
      const PlannedTensor& out = plan_.tensors[o];
      TransformedTensor shape{out.dtype, out.shape, out.size, out.transform_info};
      std::unique_ptr<TensorTransform> transform;
      if (out.num_shards > 1) {
        ASSIGN_OR_RETURN(transform,
                         transform_->BeginShard(ShardTensor(mt, out.shard_kind, out.num_shards),
                                                shape, out.shard));
      } else {
        ASSIGN_OR_RETURN(transform, transform_->Begin(mt, shape));
      }
      aj->transforms.push_back(std::move(transform));
      aj->writers.push_back(std::make_unique<DeviceOutputWriter>(
          devices_[out.device], allocations_[out.device], out.offset, out.size, mt.name));
    }
  }
  (void)first;
  return aj;
}

absl::Status LoadPipeline::Run::FinishJob(ActiveJob& aj) {
  const store::ManifestTensor& mt = manifest_.tensors[aj.job->source];
  SourceTensor& st = tensors_[aj.job->source];
  if (mt.size == 0 && cached_ == nullptr && p_.options_.verify_checksums &&
      XXH3_64bits(nullptr, 0) != mt.checksums[0]) {
    return absl::DataLossError(absl::StrCat("checksum mismatch in empty tensor ", mt.name,
                                            " of ", files_[mt.file]->path()));
  }
  for (size_t i = 0; i < aj.transforms.size(); ++i) {
    RETURN_IF_ERROR(aj.transforms[i]->Finish(*aj.writers[i]));
  }
  const uint64_t pieces = aj.job->end_piece - aj.job->first_piece;
  Report(0, st.pieces_left.fetch_sub(pieces) == pieces, false);
  return absl::OkStatus();
}

// Verifies a completed chunk and hands it on (to the device, the shards or the transform).
absl::Status LoadPipeline::Run::FinishChunk(Chunk& c) {
  ActiveJob& aj = *c.job;
  const store::ManifestTensor& mt = manifest_.tensors[aj.job->source];
  const RandomAccessFile* file = cached_ == nullptr ? files_[mt.file].get() : nullptr;
  if (!c.result.ok()) return c.result.status();
  if (*c.result < c.length) {
    return absl::DataLossError(absl::StrCat(
        "tensor ", mt.name, " in ", file->path(), ": short read at offset ",
        mt.offset + c.pos, " (", *c.result, " of ", c.length, " bytes); file truncated?"));
  }
  // A mapped chunk is hashed where it lies in the page cache, then copied (below).
  const char* bytes = c.mapped != nullptr ? c.mapped : c.data;
  if (file != nullptr && p_.options_.verify_checksums) {
    // The dispatching variant picks AVX2/AVX-512 at run time (same hash as the scalar one).
    XXH3_64bits_update_dispatch(&aj.hash, bytes, c.length);
    if (c.ends_piece) {
      uint64_t got = XXH3_64bits_digest(&aj.hash);
      XXH3_64bits_reset(&aj.hash);
      if (got != mt.checksums[c.piece]) {
        return absl::DataLossError(absl::StrCat(
            "checksum mismatch in tensor ", mt.name, " (chunk ", c.piece, ") of ",
            file->path(), ": expected ", absl::Hex(mt.checksums[c.piece], absl::kZeroPad16),
            ", read ", absl::Hex(got, absl::kZeroPad16)));
      }
    }
  }
  // Verified: now it may land. The pool's bytes are read by the engine later, not by us,
  // so the stores bypass the cache (base/streaming_copy.h).
  if (c.mapped != nullptr) CopyAroundCache(c.data, c.mapped, c.length);
  if (admission_ != nullptr && tensors_[aj.job->source].in_place) {
    // Read into its device in place: the cache gets a copy of the verified bytes. (Other
    // tensors were read into the cache entry itself; see Stream.)
    std::memcpy(admission_->TensorData(aj.job->source) + c.pos, c.data, c.length);
  }
  if (!aj.transforms.empty()) {
    RETURN_IF_ERROR(Transform(aj, c));
  } else if (!tensors_[aj.job->source].in_place) {
    RETURN_IF_ERROR(Deliver(aj.job->source, c));
  }
  Report(c.length, false, false);
  return absl::OkStatus();
}

// One worker: claims jobs in file order and keeps up to `depth` chunk reads in flight
// across job boundaries (so the queue never drains between tensors), finishing chunks in
// submission order — which is what checksums and transforms need.
absl::Status LoadPipeline::Run::Stream() {
  const uint64_t piece = store::kChecksumChunkBytes;
  const int depth = any_direct_ ? std::max(2, p_.options_.io.queue_depth / p_.threads_) : 1;
  absl::Mutex mu;  // guards Chunk::done/result, which engine callbacks set
  std::deque<std::unique_ptr<ActiveJob>> jobs;   // claimed, oldest first
  std::deque<std::unique_ptr<Chunk>> in_flight;  // submitted, oldest first
  bool exhausted = false;
  absl::Status status;

  // Submits the next chunk; false when nothing more can be submitted right now.
  auto submit_one = [&]() -> absl::StatusOr<bool> {
    if (jobs.empty() || jobs.back()->next >= jobs.back()->end) {
      if (exhausted) return false;
      ASSIGN_OR_RETURN(std::unique_ptr<ActiveJob> aj, Claim());
      if (aj == nullptr) {
        exhausted = true;
        return false;
      }
      if (aj->next >= aj->end) {  // an empty tensor: nothing to read
        RETURN_IF_ERROR(FinishJob(*aj));
        return true;
      }
      jobs.push_back(std::move(aj));
    }
    ActiveJob& aj = *jobs.back();
    const store::ManifestTensor& mt = manifest_.tensors[aj.job->source];
    const SourceTensor& st = tensors_[aj.job->source];
    auto chunk = std::make_unique<Chunk>();
    chunk->job = &aj;
    chunk->pos = aj.next;
    chunk->piece = aj.next / piece;
    const uint64_t piece_end = std::min(mt.size, (chunk->piece + 1) * piece);
    // A buffered read in place is hashed right after it lands, so it is read in pieces
    // that stay in the core's L2 for the hash (one pass over memory instead of two).
    const bool l2_reads = cached_ == nullptr && st.in_place && !files_[mt.file]->direct() &&
                          p_.options_.verify_checksums;
    chunk->length = std::min(l2_reads ? std::min(kInPlaceReadBytes, p_.ring_->slot_bytes())
                                      : p_.ring_->slot_bytes(),
                             piece_end - aj.next);
    chunk->ends_piece = aj.next + chunk->length == piece_end;
    chunk->ends_job = aj.next + chunk->length == aj.end;
    if (cached_ != nullptr) {
      chunk->data = const_cast<char*>(cached_->TensorData(aj.job->source)) + aj.next;
      chunk->done = true;
      chunk->result = chunk->length;
    } else {
      if (st.in_place) {
        const PlannedTensor& out = plan_.tensors[st.outputs[0]];
        chunk->data = static_cast<char*>(allocations_[out.device].ptr) + out.offset + aj.next;
        if (st.prepare_first) {
          RETURN_IF_ERROR(devices_[out.device]->PrepareInPlaceWrite(
              allocations_[out.device], out.offset + aj.next, chunk->length));
        }
        if (st.mapped && MappedRangeReadable(mt.file, mt.offset + aj.next, chunk->length)) {
          chunk->mapped = mappings_[mt.file]->data() + mt.offset + aj.next;
          chunk->done = true;
          chunk->result = chunk->length;
        }
      } else if (admission_ != nullptr) {
        // Admitting: the chunk lands in its place in the cache entry (4 KiB-aligned
        // tensors, padded as Prefetch's in-place reads need) and is verified, delivered
        // or transformed from there: no ring slot, no extra copy. The store's source
        // bytes stay there whatever this load makes of them.
        chunk->data = admission_->TensorData(aj.job->source) + aj.next;
      } else {
        // Block for a slot only with nothing in flight; otherwise finish older chunks
        // first (they free slots), so workers sharing the ring cannot deadlock.
        chunk->slot = in_flight.empty() ? std::optional(p_.ring_->Acquire())
                                        : p_.ring_->TryAcquire();
        if (!chunk->slot) return false;
        chunk->data = chunk->slot->data;
      }
      const RandomAccessFile* file = files_[mt.file].get();
      const bool direct = file->direct();
      if (chunk->mapped != nullptr) {
        aj.next += chunk->length;
        in_flight.push_back(std::move(chunk));
        return true;
      }
      // O_DIRECT reads whole aligned blocks: a tensor's last chunk is rounded up (into
      // alignment padding of the slot or the allocation; a short read at EOF is fine).
      const uint64_t length = direct ? AlignUp(chunk->length, kDirectIoAlignment) : chunk->length;
      Chunk* raw = chunk.get();
      IoEngine& engine = direct ? *p_.direct_engine_ : *p_.inline_engine_;
      engine.Submit(ReadRequest{file, mt.offset + aj.next, length, raw->data},
                    [&mu, raw](absl::StatusOr<size_t> r) {
                      absl::MutexLock lock(&mu);
                      raw->result = std::move(r);
                      raw->done = true;
                    });
    }
    aj.next += chunk->length;
    in_flight.push_back(std::move(chunk));
    return true;
  };

  while (status.ok()) {
    while (static_cast<int>(in_flight.size()) < depth && !Stopped()) {
      absl::StatusOr<bool> more = submit_one();
      if (!more.ok()) status = more.status();
      if (!more.ok() || !*more) break;
    }
    if (!status.ok() || in_flight.empty()) break;
    std::unique_ptr<Chunk> c = std::move(in_flight.front());
    in_flight.pop_front();
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(&c->done));
    }
    status = FinishChunk(*c);
    if (c->slot) p_.ring_->Release(*c->slot);
    if (status.ok() && c->ends_job) {
      status = FinishJob(*jobs.front());
      jobs.pop_front();
    }
    if (Stopped()) break;  // cancelled, or another worker failed
  }
  // Wait out reads still in flight before their buffers go away.
  for (auto& c : in_flight) {
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(&c->done));
    }
    if (c->slot) p_.ring_->Release(*c->slot);
  }
  return status;
}

absl::Status LoadPipeline::Run::CopyOut(const PlannedTensor& out, uint64_t out_offset,
                                        const char* src, uint64_t bytes,
                                        std::vector<std::pair<Device*, CopyTicket>>* tickets) {
  Device* device = devices_[out.device];
  ASSIGN_OR_RETURN(CopyTicket ticket,
                   device->CopyToDeviceAsync(allocations_[out.device], out.offset + out_offset,
                                             src, bytes));
  tickets->emplace_back(device, ticket);
  return absl::OkStatus();
}

namespace {

// Calls fn(out_offset, chunk_offset, bytes) for every run of source bytes [a, b) that
// output `out` holds (a shard holds part of the source tensor, a whole output all of it),
// in source order: out_offset is the byte position inside the output, chunk_offset the
// position relative to `a`.
template <typename Fn>
absl::Status ForEachPiece(const PlannedTensor& out, const store::ManifestTensor& mt, uint64_t a,
                          uint64_t b, Fn&& fn) {
  switch (out.shard_kind) {
    case ShardKind::kWhole:
      return fn(a, 0, b - a);
    case ShardKind::kRows: {
      // Shard s holds source bytes [s*size, (s+1)*size) (size: the shard's source bytes).
      const uint64_t size = mt.size / out.num_shards;
      uint64_t lo = std::max(a, out.shard * size);
      uint64_t hi = std::min(b, (out.shard + 1) * size);
      if (lo < hi) return fn(lo - out.shard * size, lo - a, hi - lo);
      return absl::OkStatus();
    }
    case ShardKind::kColumns: {
      // Row r of the source is [r*row, (r+1)*row); shard s holds [s*width, (s+1)*width)
      // of every row, stored contiguously as its own row r.
      uint64_t inner = DTypeSize(mt.dtype);
      for (size_t d = 2; d < mt.shape.size(); ++d) inner *= static_cast<uint64_t>(mt.shape[d]);
      const uint64_t row = static_cast<uint64_t>(mt.shape[1]) * inner;
      const uint64_t width = row / out.num_shards;
      if (row == 0) return absl::OkStatus();
      for (uint64_t r = a / row; r * row < b; ++r) {
        uint64_t lo = std::max(a, r * row + out.shard * width);
        uint64_t hi = std::min(b, r * row + (out.shard + 1) * width);
        if (lo >= hi) continue;
        RETURN_IF_ERROR(fn(r * width + (lo - r * row - out.shard * width), lo - a, hi - lo));
      }
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

}  // namespace

// Copies a verified chunk of source bytes to every output (shard) that holds part of it.
absl::Status LoadPipeline::Run::Deliver(int source, const Chunk& chunk) {
  const store::ManifestTensor& mt = manifest_.tensors[source];
  if (staged_) {
    for (int o : tensors_[source].outputs) {
      if (plan_.tensors[o].device != 0) return DeliverStaged(source, chunk);
    }
  }
  std::vector<std::pair<Device*, CopyTicket>> tickets;
  for (int o : tensors_[source].outputs) {
    const PlannedTensor& out = plan_.tensors[o];
    RETURN_IF_ERROR(ForEachPiece(out, mt, chunk.pos, chunk.pos + chunk.length,
                                 [&](uint64_t out_offset, uint64_t at, uint64_t bytes) {
                                   return CopyOut(out, out_offset, chunk.data + at, bytes,
                                                  &tickets);
                                 }));
  }
  // The chunk's buffer is reused once we return (device.h contract 2).
  for (auto& [device, ticket] : tickets) RETURN_IF_ERROR(device->Wait(ticket));
  return absl::OkStatus();
}

absl::StatusOr<Allocation> LoadPipeline::Run::AcquireStaging() {
  {
    absl::MutexLock lock(&staging_mu_);
    if (!staging_free_.empty()) {
      Allocation a = staging_free_.back();
      staging_free_.pop_back();
      return a;
    }
  }
  ASSIGN_OR_RETURN(Allocation a, devices_[0]->Allocate(p_.ring_->slot_bytes()));
  absl::MutexLock lock(&staging_mu_);
  staging_all_.push_back(a);
  return a;
}

void LoadPipeline::Run::ReleaseStaging(const Allocation& a) {
  absl::MutexLock lock(&staging_mu_);
  staging_free_.push_back(a);
}

absl::Status LoadPipeline::Run::DeliverStaged(int source, const Chunk& chunk) {
  const store::ManifestTensor& mt = manifest_.tensors[source];
  const std::vector<int>& outputs = tensors_[source].outputs;
  Communicator& comm = *spread_->communicator;
  const std::vector<int>& ranks = spread_->ranks;
  const uint64_t a = chunk.pos, n = chunk.length;
  // Collectives name every rank of the communicator: only a load over all of them (each
  // device once) may use Broadcast / Scatter.
  const bool all_ranks = static_cast<int>(devices_.size()) == comm.size() &&
                         static_cast<int>(outputs.size()) == comm.size();
  auto span_of = [&](const PlannedTensor& out, uint64_t out_offset, uint64_t bytes) {
    return DeviceSpan{ranks[out.device],
                      static_cast<char*>(allocations_[out.device].ptr) + out.offset + out_offset,
                      bytes};
  };
  auto h2d = [&](Device* device, const Allocation& dst, uint64_t offset, const char* src,
                 uint64_t bytes) -> absl::Status {
    ASSIGN_OR_RETURN(CopyTicket ticket, device->CopyToDeviceAsync(dst, offset, src, bytes));
    return device->Wait(ticket);
  };

  // 1. Replicated (every output the whole tensor, the root's among them): one copy into
  //    the root's output, then from there to the others.
  const PlannedTensor* root_whole = nullptr;
  bool all_whole = true;
  for (int o : outputs) {
    const PlannedTensor& out = plan_.tensors[o];
    all_whole &= out.shard_kind == ShardKind::kWhole;
    if (out.device == 0 && out.shard_kind == ShardKind::kWhole) root_whole = &out;
  }
  if (root_whole != nullptr) {
    RETURN_IF_ERROR(h2d(devices_[0], allocations_[0], root_whole->offset + a, chunk.data, n));
    const DeviceSpan src = span_of(*root_whole, a, n);
    if (all_whole && all_ranks) {
      std::vector<DeviceSpan> buffers(comm.size());
      for (int o : outputs) {
        const PlannedTensor& out = plan_.tensors[o];
        buffers[ranks[out.device]] = span_of(out, a, n);
      }
      return comm.Broadcast(ranks[0], buffers, n);
    }
    for (int o : outputs) {
      const PlannedTensor& out = plan_.tensors[o];
      if (&out == root_whole) continue;
      RETURN_IF_ERROR(ForEachPiece(out, mt, a, a + n, [&](uint64_t out_offset, uint64_t at,
                                                          uint64_t bytes) {
        return comm.Copy(DeviceSpan{src.rank, static_cast<char*>(src.data) + at, bytes},
                         span_of(out, out_offset, bytes));
      }));
    }
    return absl::OkStatus();
  }

  // 2. Shards (or a tensor on another device): per output, its pieces of the chunk.
  struct Piece {
    const PlannedTensor* out;
    uint64_t out_offset, at, bytes;
  };
  std::vector<std::vector<Piece>> pieces(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    const PlannedTensor& out = plan_.tensors[outputs[i]];
    RETURN_IF_ERROR(ForEachPiece(out, mt, a, a + n, [&](uint64_t out_offset, uint64_t at,
                                                        uint64_t bytes) {
      pieces[i].push_back(Piece{&out, out_offset, at, bytes});
      return absl::OkStatus();
    }));
  }
  // Scatter: every rank gets the same number of bytes, contiguous in its output. The
  // chunk is rearranged on the host in rank order (a no-op for one row-split chunk).
  bool equal = all_ranks;
  uint64_t each = 0;
  for (size_t i = 0; i < outputs.size() && equal; ++i) {
    uint64_t total = 0;
    for (size_t k = 0; k < pieces[i].size(); ++k) {
      if (k > 0 && pieces[i][k].out_offset !=
                       pieces[i][k - 1].out_offset + pieces[i][k - 1].bytes) {
        equal = false;
      }
      total += pieces[i][k].bytes;
    }
    if (i == 0) each = total;
    equal &= total == each && each > 0;
  }
  ASSIGN_OR_RETURN(Allocation staging, AcquireStaging());
  absl::Status status;
  const DeviceSpan stage{ranks[0], staging.ptr, staging.size};
  if (equal) {
    std::string arranged(each * comm.size(), '\0');
    std::vector<DeviceSpan> dsts(comm.size());
    for (size_t i = 0; i < outputs.size(); ++i) {
      const int rank = ranks[pieces[i][0].out->device];
      uint64_t cursor = static_cast<uint64_t>(rank) * each;
      for (const Piece& p : pieces[i]) {
        std::memcpy(arranged.data() + cursor, chunk.data + p.at, p.bytes);
        cursor += p.bytes;
      }
      dsts[rank] = span_of(*pieces[i][0].out, pieces[i][0].out_offset, each);
    }
    status = h2d(devices_[0], staging, 0, arranged.data(), arranged.size());
    if (status.ok()) status = comm.Scatter(stage, dsts, each);
  } else {
    status = h2d(devices_[0], staging, 0, chunk.data, n);
    for (size_t i = 0; i < outputs.size() && status.ok(); ++i) {
      for (const Piece& p : pieces[i]) {
        status = comm.Copy(DeviceSpan{stage.rank, static_cast<char*>(staging.ptr) + p.at, p.bytes},
                           span_of(*p.out, p.out_offset, p.bytes));
        if (!status.ok()) break;
      }
    }
  }
  ReleaseStaging(staging);
  return status;
}

// Feeds a verified chunk to the transform of every output (shard) that holds part of it,
// each shard's bytes in its own order (tensor_transform.h contract 5).
absl::Status LoadPipeline::Run::Transform(ActiveJob& aj, const Chunk& chunk) {
  const store::ManifestTensor& mt = manifest_.tensors[aj.job->source];
  const std::vector<int>& outputs = tensors_[aj.job->source].outputs;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const PlannedTensor& out = plan_.tensors[outputs[i]];
    if (out.shard_kind == ShardKind::kWhole) {
      RETURN_IF_ERROR(aj.transforms[i]->Consume(chunk.data, chunk.length, *aj.writers[i]));
      continue;
    }
    aj.gather.clear();
    RETURN_IF_ERROR(ForEachPiece(out, mt, chunk.pos, chunk.pos + chunk.length,
                                 [&](uint64_t, uint64_t at, uint64_t bytes) {
                                   aj.gather.append(chunk.data + at, bytes);
                                   return absl::OkStatus();
                                 }));
    if (!aj.gather.empty()) {
      RETURN_IF_ERROR(aj.transforms[i]->Consume(aj.gather.data(), aj.gather.size(),
                                                *aj.writers[i]));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------

LoadPipeline::LoadPipeline(const Options& options, int threads,
                           std::unique_ptr<IoEngine> direct_engine,
                           std::unique_ptr<IoEngine> inline_engine,
                           std::unique_ptr<PinnedRing> ring)
    : options_(options), threads_(threads), direct_engine_(std::move(direct_engine)),
      inline_engine_(std::move(inline_engine)), ring_(std::move(ring)) {
  int64_t mapped = options.kept_mapping_bytes;
  if (mapped < 0) {
    mapped = static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE);
  }
  if (mapped > 0) mappings_ = std::make_unique<FileMappings>(static_cast<uint64_t>(mapped));
}

LoadPipeline::~LoadPipeline() = default;

absl::StatusOr<std::unique_ptr<LoadPipeline>> LoadPipeline::Create(const Options& in) {
  Options options = in;
  if (options.env == nullptr) options.env = Env::Default();
  if (options.chunk_bytes == 0 || options.chunk_bytes % kDirectIoAlignment != 0 ||
      options.chunk_bytes > store::kChecksumChunkBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk size ", options.chunk_bytes, " must be a multiple of 4096 up to ",
        store::kChecksumChunkBytes));
  }
  int threads = options.threads;
  if (threads <= 0) threads = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  threads = std::min(threads, 64);
  ASSIGN_OR_RETURN(std::unique_ptr<IoEngine> direct_engine, CreateIoEngine(options.io));
  std::unique_ptr<IoEngine> inline_engine = CreatePreadIoEngine(0);
  PinnedRing::Options ring_options;
  ring_options.total_bytes = options.ring_bytes;
  ring_options.slot_bytes = options.chunk_bytes;
  ring_options.allocator = options.ring_allocator;
  ASSIGN_OR_RETURN(std::unique_ptr<PinnedRing> ring, PinnedRing::Create(ring_options));
  return std::unique_ptr<LoadPipeline>(new LoadPipeline(
      options, threads, std::move(direct_engine), std::move(inline_engine), std::move(ring)));
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadPipeline::Load(
    const ModelSource& source, const std::vector<Device*>& devices,
    const PlanOptions& plan_options, const CancellationToken* cancel,
    const LoadProgressCallback& progress, LoadStats* stats) {
  ASSIGN_OR_RETURN(LoadPlan plan,
                   MakeLoadPlan(source.manifest, static_cast<int>(devices.size()), plan_options));
  return LoadWithPlan(source, devices, plan, plan_options.transform, cancel, progress, stats,
                      plan_options.spread, plan_options.admit_to_cache);
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadPipeline::LoadWithPlan(
    const ModelSource& source, const std::vector<Device*>& devices, const LoadPlan& plan,
    TransformProvider* transform, const CancellationToken* cancel,
    const LoadProgressCallback& progress, LoadStats* stats, const SpreadOptions* spread,
    bool admit_to_cache) {
  return LoadImpl(source, devices, plan, transform, cancel, progress, stats,
                  /*use_cache=*/true, admit_to_cache, /*in_place=*/options_.in_place_reads,
                  spread);
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadPipeline::ReadUncached(
    const ModelSource& source, Device* memory, const LoadPlan& plan) {
  return LoadImpl(source, {memory}, plan, /*transform=*/nullptr, /*cancel=*/nullptr,
                  /*progress=*/{}, /*stats=*/nullptr, /*use_cache=*/false, /*admit=*/false,
                  /*in_place=*/true);
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadPipeline::LoadImpl(
    const ModelSource& source, const std::vector<Device*>& devices, const LoadPlan& plan,
    TransformProvider* transform, const CancellationToken* cancel,
    const LoadProgressCallback& progress, LoadStats* stats, bool use_cache, bool admit,
    bool in_place, const SpreadOptions* spread) {
  for (const PlannedTensor& t : plan.tensors) {
    if (t.transformed && transform == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan transforms ", t.name, " but no transform was given"));
    }
  }
  std::optional<HostCache::Handle> cached;
  if (use_cache && options_.cache != nullptr) cached = options_.cache->Lookup(source.key);
  // Admission (host_cache.h): only a load that reads every source tensor from its files
  // and verifies it can vouch for the bytes it leaves in the cache.
  std::optional<HostCache::Admission> admission;
  if (admit && !cached && options_.cache != nullptr && options_.verify_checksums &&
      PlanCoversManifest(plan, source.manifest)) {
    admission = options_.cache->BeginAdmission(source);
  }
  const double start = NowSeconds();
  absl::Status status;
  std::vector<Allocation> allocations;
  std::string io;
  {
    Run run(this, source, devices, plan, transform, cancel, progress,
            cached ? &*cached : nullptr, admission ? &*admission : nullptr, in_place, spread);
    status = run.Execute();
    allocations = run.TakeAllocations();
    io = run.io_description();
  }  // the run's staging buffers are freed here
  if (!status.ok()) {
    // Nothing half-loaded survives: free whatever was allocated.
    for (size_t d = 0; d < allocations.size(); ++d) {
      if (allocations[d].ptr != nullptr) devices[d]->Free(allocations[d]).IgnoreError();
    }
    return status;  // an uncommitted admission frees its reservation as it goes
  }
  if (admission) admission->Commit();
  const double seconds = NowSeconds() - start;
  if (stats != nullptr) {
    stats->bytes = plan.source_bytes;
    stats->tensors = static_cast<int>(source.manifest.tensors.size());
    stats->seconds = seconds;
    stats->gbps = seconds > 0 ? static_cast<double>(plan.source_bytes) / seconds / 1e9 : 0;
    stats->from_cache = cached.has_value();
    stats->admitted = admission.has_value();
    stats->io = io;
    stats->spread = devices.size() <= 1 ? ""
                    : spread != nullptr ? SpreadPathName(spread->path)
                                        : SpreadPathName(SpreadPath::kPerDevice);
  }
  if (progress) {
    LoadProgress pr;
    pr.bytes = pr.total_bytes = plan.source_bytes;
    pr.tensors = pr.total_tensors = static_cast<int>(source.manifest.tensors.size());
    pr.seconds = seconds;
    pr.gbps = seconds > 0 ? static_cast<double>(plan.source_bytes) / seconds / 1e9 : 0;
    progress(pr);
  }
  return std::make_unique<LoadedModel>(source.key, devices, std::move(allocations), plan);
}

// ---------------------------------------------------------------------------------------

absl::Status DropFromPageCache(const ModelSource& source) {
  for (const std::string& path : source.file_paths) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(absl::StrCat("open ", path));
    // DONTNEED drops clean pages only; the store fsyncs what it writes, so all are clean.
    ::fdatasync(fd);
    int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    if (rc != 0) {
      return absl::InternalError(absl::StrCat("posix_fadvise DONTNEED ", path, ": ", rc));
    }
  }
  return absl::OkStatus();
}

double PageCacheResidency(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size <= 0) {
    ::close(fd);
    return 1;  // nothing to read: as good as cached
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return 0;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t pages = (static_cast<size_t>(size) + page - 1) / page;
  std::vector<unsigned char> vec(pages);
  double residency = 0;
  if (::mincore(map, static_cast<size_t>(size), vec.data()) == 0) {
    size_t resident = 0;
    for (unsigned char v : vec) resident += v & 1;
    residency = static_cast<double>(resident) / static_cast<double>(pages);
  }
  ::munmap(map, static_cast<size_t>(size));
  return residency;
}

}  // namespace loadstar::loader
