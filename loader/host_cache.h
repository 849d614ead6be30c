// HostCache: the host-memory tier between the store and the devices — an LRU of whole
// models (keyed by ModelSource::key, i.e. name and variant) bounded by bytes. A load of a
// cached model copies from memory and skips the disk; the bytes were verified against
// the manifest's checksums once, when they were inserted.
//
// Two ways in: Prefetch reads a model into the cache on purpose (Worker.Cache); an
// Admission is taken by LoadPipeline when it reads a model from disk onto devices, and
// receives the verified chunks as they stream (ServerlessLLM's multi-tier loading: the
// next cold start of that model copies from DRAM, no second read of the files). Either
// way the entry's bytes are reserved up front and it becomes visible (Lookup, Contains,
// Keys) only once every byte was read and verified; a failed read leaves nothing.
//
// Entries are pinned while a Handle to them lives (a load in progress); pinned entries
// are never evicted. When inserting needs room, unpinned entries are evicted least
// recently used first, and only if that makes enough room (nothing is evicted for an
// insert that cannot fit); otherwise Prefetch fails with ResourceExhausted (the caller
// loads from disk instead) and BeginAdmission returns nullopt (the load proceeds
// without admission).
//
// Memory comes from a HostMemoryAllocator so that with CUDA it is page-locked and copies
// to the GPU run at DMA speed.
//
// Thread safety: all methods are thread-safe. A Handle must not outlive its cache.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/device.h"
#include "base/host_memory_allocator.h"
#include "loader/load_plan.h"
#include "loader/loaded_model.h"
#include "loader/model_source.h"

namespace loadstar::loader {

// What HostCache::Prefetch needs from a loader, and nothing more: read `source` from its
// files (never from a cache) onto `memory`, one host-addressable device, as `plan` (one
// device, no transform) places it, verifying checksums, reading in place where it can.
// LoadPipeline implements it.
class UncachedModelReader {
 public:
  virtual ~UncachedModelReader() = default;
  virtual absl::StatusOr<std::unique_ptr<LoadedModel>> ReadUncached(const ModelSource& source,
                                                                    Device* memory,
                                                                    const LoadPlan& plan) = 0;
};

class HostCache {
 public:
  struct Options {
    uint64_t capacity_bytes = 0;
    HostMemoryAllocator* allocator = nullptr;  // nullptr: aligned_alloc
  };

 private:
  struct Entry;

 public:
  // Pins one cached model while alive. Movable.
  class Handle {
   public:
    Handle(Handle&& other) noexcept;
    Handle& operator=(Handle&& other) noexcept;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle();

    const ModelSource& source() const;
    // The verified bytes of manifest tensor `index`.
    const char* TensorData(int index) const;

   private:
    friend class HostCache;
    Handle(HostCache* cache, std::shared_ptr<Entry> entry);
    void Reset();
    HostCache* cache_ = nullptr;
    std::shared_ptr<Entry> entry_;
  };

  explicit HostCache(const Options& options);
  ~HostCache();
  HostCache(const HostCache&) = delete;
  HostCache& operator=(const HostCache&) = delete;

  // The model if cached (and marks it most recently used), pinned; nullopt otherwise.
  std::optional<Handle> Lookup(const std::string& key);

  // Reads `source` from disk into the cache with `reader` (a LoadPipeline; it verifies
  // checksums). OK at once if it is cached already; waits if another Prefetch of it (or a
  // load admitting it) is running, and reads it itself if that one failed. ResourceExhausted when it cannot fit even after evicting every unpinned entry.
  absl::Status Prefetch(const ModelSource& source, UncachedModelReader& reader);

  // A reservation of `source`'s whole bytes (laid out as Prefetch lays them out: one
  // device, manifest order) that a load fills while it streams from disk. Invisible
  // until Commit; destroyed uncommitted, it frees the reservation and leaves no entry.
  // Movable; must not outlive its cache.
  class Admission {
   public:
    Admission(Admission&& other) noexcept;
    Admission& operator=(Admission&& other) noexcept;
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;
    ~Admission();

    // Where the bytes of manifest tensor `index` go (its size is the manifest's).
    char* TensorData(int index) const;
    // The load completed and verified every byte written through TensorData: the entry
    // becomes visible (most recently used).
    void Commit();

   private:
    friend class HostCache;
    Admission(HostCache* cache, std::shared_ptr<Entry> entry, LoadPlan plan,
              Allocation allocation);
    void Abandon();
    HostCache* cache_ = nullptr;
    std::shared_ptr<Entry> entry_;
    LoadPlan plan_;
    Allocation allocation_;
  };

  // Reserves room for `source` (evicting unpinned entries, least recently used first, if
  // that makes enough room) and allocates its memory. nullopt when it is cached or being
  // read already (a concurrent load or Prefetch admits it once), when it cannot fit, or
  // when the memory cannot be allocated: the caller loads without admitting.
  std::optional<Admission> BeginAdmission(const ModelSource& source);

  // Drops a cached model. NotFound if absent, FailedPrecondition while pinned.
  absl::Status Evict(const std::string& key);

  bool Contains(const std::string& key) const;
  uint64_t used_bytes() const;
  uint64_t capacity_bytes() const { return options_.capacity_bytes; }
  // Cached keys, most recently used first (entries still loading are left out).
  std::vector<std::string> Keys() const;

 private:
  struct Entry {
    std::string key;
    ModelSource source;
    uint64_t bytes = 0;
    int pins = 0;
    bool ready = false;
    std::unique_ptr<Device> memory;        // where the bytes live
    std::unique_ptr<LoadedModel> model;    // single-device, manifest order, verified
  };

  // Evicts unpinned ready entries, LRU first, until `bytes` more fit; evicts nothing and
  // returns false when even evicting all of them would not make room.
  bool MakeRoomLocked(uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unpin(Entry* entry);
  // Reserves `bytes` for a new, not yet ready entry of `source`; nullptr when it cannot
  // fit. REQUIRES: no entry for source.key.
  std::shared_ptr<Entry> ReserveLocked(const ModelSource& source, uint64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes a not-ready entry (a failed read) and its reservation.
  void DropLoadingLocked(const std::shared_ptr<Entry>& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TouchLocked(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;  // includes entries being loaded
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> lru_ ABSL_GUARDED_BY(mu_);  // most recent first
};

}  // namespace loadstar::loader
