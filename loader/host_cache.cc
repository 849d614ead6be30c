#include "loader/host_cache.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace loadstar::loader {
namespace {

// Host memory from a HostMemoryAllocator presented as a Device, so the load pipeline
// fills cache entries exactly as it fills devices (in-place reads, verification). It
// holds one model; it cannot be exported (cache memory is private to the daemon).
class CacheMemory final : public Device {
 public:
  explicit CacheMemory(HostMemoryAllocator* allocator) : allocator_(allocator) {}
  ~CacheMemory() override {
    if (ptr_ != nullptr) allocator_->Free(ptr_);
  }

  DeviceKind kind() const override { return DeviceKind::kHost; }
  std::string name() const override { return "host-cache"; }
  uint64_t total_memory() const override { return size_; }
  uint64_t free_memory() const override { return 0; }

  absl::StatusOr<Allocation> Allocate(uint64_t bytes) override {
    if (ptr_ != nullptr) return absl::FailedPreconditionError("cache memory holds one model");
    ptr_ = allocator_->Allocate(bytes, kDirectIoAlignment);
    if (ptr_ == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", bytes, " bytes of host cache memory"));
    }
    size_ = bytes;
    return Allocation{1, ptr_, bytes};
  }
  absl::Status Free(const Allocation& allocation) override {
    if (ptr_ == nullptr || allocation.ptr != ptr_) {
      return absl::NotFoundError("no such cache allocation");
    }
    allocator_->Free(ptr_);
    ptr_ = nullptr;
    size_ = 0;
    return absl::OkStatus();
  }
  absl::StatusOr<CopyTicket> CopyToDeviceAsync(const Allocation& dst, uint64_t offset,
                                               const void* src, uint64_t bytes) override {
    if (offset > size_ || bytes > size_ - offset) {
      return absl::OutOfRangeError("copy outside the cache allocation");
    }
    std::memcpy(static_cast<char*>(ptr_) + offset, src, bytes);
    return CopyTicket{0};
  }
  absl::Status Wait(CopyTicket) override { return absl::OkStatus(); }
  absl::Status CopyToHost(void* dst, const Allocation& src, uint64_t offset,
                          uint64_t bytes) override {
    if (offset > size_ || bytes > size_ - offset) {
      return absl::OutOfRangeError("copy outside the cache allocation");
    }
    std::memcpy(dst, static_cast<const char*>(ptr_) + offset, bytes);
    return absl::OkStatus();
  }
  absl::StatusOr<ExportedHandle> Export(const Allocation&) override {
    return absl::UnimplementedError("host cache memory cannot be exported");
  }

 private:
  HostMemoryAllocator* const allocator_;
  void* ptr_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace

// --- Handle -----------------------------------------------------------------------------

HostCache::Handle::Handle(HostCache* cache, std::shared_ptr<Entry> entry)
    : cache_(cache), entry_(std::move(entry)) {}

HostCache::Handle::Handle(Handle&& other) noexcept
    : cache_(other.cache_), entry_(std::move(other.entry_)) {
  other.cache_ = nullptr;
}

HostCache::Handle& HostCache::Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    Reset();
    cache_ = other.cache_;
    entry_ = std::move(other.entry_);
    other.cache_ = nullptr;
  }
  return *this;
}

HostCache::Handle::~Handle() { Reset(); }

void HostCache::Handle::Reset() {
  if (cache_ != nullptr && entry_ != nullptr) cache_->Unpin(entry_.get());
  cache_ = nullptr;
  entry_.reset();
}

const ModelSource& HostCache::Handle::source() const { return entry_->source; }

const char* HostCache::Handle::TensorData(int index) const {
  return entry_->model->HostData(entry_->model->tensors()[index]);
}

// --- HostCache --------------------------------------------------------------------------

HostCache::HostCache(const Options& options) : options_(options) {}

HostCache::~HostCache() {
  absl::MutexLock lock(&mu_);
  for (auto& [key, entry] : entries_) {
    // Free the model before the memory that holds it.
    entry->model.reset();
    entry->memory.reset();
  }
}

void HostCache::TouchLocked(const std::string& key) {
  lru_.remove(key);
  lru_.push_front(key);
}

std::optional<HostCache::Handle> HostCache::Lookup(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || !it->second->ready) return std::nullopt;
  ++it->second->pins;
  TouchLocked(key);
  return Handle(this, it->second);
}

void HostCache::Unpin(Entry* entry) {
  absl::MutexLock lock(&mu_);
  --entry->pins;
}

bool HostCache::MakeRoomLocked(uint64_t bytes) {
  if (bytes > options_.capacity_bytes) return false;
  // Only evict when that is enough: a model that cannot fit must not empty the cache.
  uint64_t freeable = options_.capacity_bytes - used_;
  for (const auto& [key, entry] : entries_) {
    if (entry->pins == 0 && entry->ready) freeable += entry->bytes;
  }
  if (freeable < bytes) return false;
  // Walk from the least recently used end, skipping pinned (and loading) entries.
  for (auto it = lru_.rbegin(); it != lru_.rend() && options_.capacity_bytes - used_ < bytes;) {
    auto e = entries_.find(*it);
    if (e->second->pins > 0 || !e->second->ready) {
      ++it;
      continue;
    }
    used_ -= e->second->bytes;
    e->second->model.reset();
    e->second->memory.reset();
    entries_.erase(e);
    it = std::make_reverse_iterator(lru_.erase(std::next(it).base()));
  }
  return options_.capacity_bytes - used_ >= bytes;
}

std::shared_ptr<HostCache::Entry> HostCache::ReserveLocked(const ModelSource& source,
                                                           uint64_t bytes) {
  if (!MakeRoomLocked(bytes)) return nullptr;
  auto entry = std::make_shared<Entry>();
  used_ += bytes;
  entry->key = source.key;
  entry->source = source;
  entry->bytes = bytes;
  entries_.emplace(source.key, entry);
  lru_.push_front(source.key);
  return entry;
}

void HostCache::DropLoadingLocked(const std::shared_ptr<Entry>& entry) {
  auto it = entries_.find(entry->key);
  if (it == entries_.end() || it->second != entry) return;
  used_ -= entry->bytes;
  entries_.erase(it);
  lru_.remove(entry->key);
}

absl::Status HostCache::Prefetch(const ModelSource& source, UncachedModelReader& reader) {
  ASSIGN_OR_RETURN(LoadPlan plan, MakeLoadPlan(source.manifest, 1, PlanOptions{}));
  const uint64_t bytes = plan.device_bytes[0];
  std::shared_ptr<Entry> entry;
  {
    absl::MutexLock lock(&mu_);
    for (;;) {
      auto it = entries_.find(source.key);
      if (it == entries_.end()) break;
      if (it->second->ready) {
        TouchLocked(source.key);
        return absl::OkStatus();
      }
      // Another Prefetch (or a load admitting it) is reading it: wait for it to finish
      // (or fail and vanish).
      std::shared_ptr<Entry> loading = it->second;
      std::pair<HostCache*, Entry*> arg(this, loading.get());
      mu_.Await(absl::Condition(
          +[](std::pair<HostCache*, Entry*>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            auto found = a->first->entries_.find(a->second->key);
            return a->second->ready || found == a->first->entries_.end() ||
                   found->second.get() != a->second;
          },
          &arg));
    }
    entry = ReserveLocked(source, bytes);
    if (entry == nullptr) {
      uint64_t freeable = options_.capacity_bytes - used_;
      for (const auto& [key, e] : entries_) {
        if (e->pins == 0 && e->ready) freeable += e->bytes;
      }
      return absl::ResourceExhaustedError(absl::StrCat(
          "host cache: ", source.key, " needs ", bytes, " bytes; ", freeable, " of ",
          options_.capacity_bytes, " can be freed (the rest is pinned or being loaded)"));
    }
  }
  entry->memory = std::make_unique<CacheMemory>(
      options_.allocator != nullptr ? options_.allocator : DefaultHostAllocator());
  absl::StatusOr<std::unique_ptr<LoadedModel>> model =
      reader.ReadUncached(source, entry->memory.get(), plan);
  absl::MutexLock lock(&mu_);
  if (!model.ok()) {
    DropLoadingLocked(entry);
    return model.status();
  }
  entry->model = *std::move(model);
  entry->ready = true;
  return absl::OkStatus();
}

// --- Admission --------------------------------------------------------------------------

HostCache::Admission::Admission(HostCache* cache, std::shared_ptr<Entry> entry, LoadPlan plan,
                                Allocation allocation)
    : cache_(cache), entry_(std::move(entry)), plan_(std::move(plan)),
      allocation_(allocation) {}

HostCache::Admission::Admission(Admission&& other) noexcept
    : cache_(other.cache_), entry_(std::move(other.entry_)), plan_(std::move(other.plan_)),
      allocation_(other.allocation_) {
  other.cache_ = nullptr;
}

HostCache::Admission& HostCache::Admission::operator=(Admission&& other) noexcept {
  if (this != &other) {
    Abandon();
    cache_ = other.cache_;
    entry_ = std::move(other.entry_);
    plan_ = std::move(other.plan_);
    allocation_ = other.allocation_;
    other.cache_ = nullptr;
  }
  return *this;
}

HostCache::Admission::~Admission() { Abandon(); }

void HostCache::Admission::Abandon() {
  if (cache_ == nullptr || entry_ == nullptr) return;
  {
    absl::MutexLock lock(&cache_->mu_);
    cache_->DropLoadingLocked(entry_);
  }
  // The memory goes with the last reference (CacheMemory frees its allocation).
  entry_.reset();
  cache_ = nullptr;
}

char* HostCache::Admission::TensorData(int index) const {
  return static_cast<char*>(allocation_.ptr) + plan_.tensors[index].offset;
}

void HostCache::Admission::Commit() {
  if (cache_ == nullptr || entry_ == nullptr) return;
  auto model = std::make_unique<LoadedModel>(entry_->key, std::vector<Device*>{entry_->memory.get()},
                                             std::vector<Allocation>{allocation_}, plan_);
  absl::MutexLock lock(&cache_->mu_);
  entry_->model = std::move(model);
  entry_->ready = true;
  cache_->TouchLocked(entry_->key);
  entry_.reset();
  cache_ = nullptr;
}

std::optional<HostCache::Admission> HostCache::BeginAdmission(const ModelSource& source) {
  absl::StatusOr<LoadPlan> plan = MakeLoadPlan(source.manifest, 1, PlanOptions{});
  if (!plan.ok()) return std::nullopt;
  const uint64_t bytes = plan->device_bytes[0];
  std::shared_ptr<Entry> entry;
  {
    absl::MutexLock lock(&mu_);
    if (entries_.contains(source.key)) return std::nullopt;  // cached, or being read
    entry = ReserveLocked(source, bytes);
    if (entry == nullptr) return std::nullopt;
  }
  entry->memory = std::make_unique<CacheMemory>(
      options_.allocator != nullptr ? options_.allocator : DefaultHostAllocator());
  absl::StatusOr<Allocation> allocation = entry->memory->Allocate(bytes);
  if (!allocation.ok()) {
    absl::MutexLock lock(&mu_);
    DropLoadingLocked(entry);
    return std::nullopt;
  }
  return Admission(this, std::move(entry), *std::move(plan), *allocation);
}

absl::Status HostCache::Evict(const std::string& key) {
  std::shared_ptr<Entry> victim;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it == entries_.end() || !it->second->ready) {
      return absl::NotFoundError(absl::StrCat("host cache: ", key, " is not cached"));
    }
    if (it->second->pins > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("host cache: ", key, " is in use by ", it->second->pins, " load(s)"));
    }
    victim = std::move(it->second);
    entries_.erase(it);
    lru_.remove(key);
    used_ -= victim->bytes;
  }
  victim->model.reset();
  victim->memory.reset();
  return absl::OkStatus();
}

bool HostCache::Contains(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  return it != entries_.end() && it->second->ready;
}

uint64_t HostCache::used_bytes() const {
  absl::MutexLock lock(&mu_);
  return used_;
}

std::vector<std::string> HostCache::Keys() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> keys;
  for (const std::string& key : lru_) {
    if (entries_.at(key)->ready) keys.push_back(key);
  }
  return keys;
}

}  // namespace loadstar::loader
