#include "loader/host_device.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/streaming_copy.h"
#include "spdlog/spdlog.h"

namespace loadstar::loader {
namespace {

// Unique across processes (pid and start time) and within one (counter), so concurrent
// daemons and test processes never collide, nor a process with a dead one's pid.
std::string NextShmName() {
  // Per thread, and recomputed after a fork (the child has another pid).
  thread_local int cached_pid = -1;
  thread_local std::string prefix;
  const int pid = ::getpid();
  if (pid != cached_pid) {
    prefix = HostShmPrefix(pid);
    if (prefix.empty()) prefix = absl::StrCat("/loadstar-", pid, "-0-");  // no /proc
    cached_pid = pid;
  }
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(prefix, counter.fetch_add(1));
}

uint64_t PageRound(uint64_t bytes) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t rounded = (bytes + page - 1) / page * page;
  return rounded == 0 ? page : rounded;
}

// POSIX shared-memory objects live in /dev/shm on Linux (glibc's shm_open opens
// /dev/shm/<name>), so a retained object can be renamed there: the old name disappears
// at Free, as the contract says, and a reuse gets a fresh one.
std::string ShmPath(const std::string& name) { return "/dev/shm" + name; }

// The populator's step: small enough that an Allocate waiting for its range wakes soon,
// large enough that the syscalls do not matter.
constexpr uint64_t kPopulateStep = 64ull << 20;

double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Maps the whole pages under [p, p+n) writable, allocating the missing ones
// (MADV_POPULATE_WRITE, Linux 5.14): 0, or the errno (EINVAL: the kernel lacks it;
// EFAULT/ENOMEM/ENOSPC: no memory for them, e.g. a full tmpfs, where a touch would SIGBUS).
int PopulateWrite(char* p, uint64_t n) {
  if (n == 0) return 0;
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p) / page * page;
  const uintptr_t hi = reinterpret_cast<uintptr_t>(p) + n;
  return ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE) == 0 ? 0 : errno;
}

// Maps the pages of [p, p+n) of a shared mapping writable, allocating the missing ones
// (zero-filled). MADV_POPULATE_WRITE (Linux 5.14) fails cleanly (EFAULT) where a touch
// would SIGBUS (tmpfs full); without it, fallocate reserves the pages (ENOSPC when full)
// and a write per page maps them.
int PopulateRange(int fd, char* base, uint64_t offset, uint64_t n) {
  const int err = PopulateWrite(base + offset, n);
  if (err != EINVAL) return err;
  if (::fallocate(fd, 0, static_cast<off_t>(offset), static_cast<off_t>(n)) != 0) return errno;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  for (uint64_t o = 0; o < n; o += page) {
    volatile char* c = base + offset + o;
    *c = *c;
  }
  return 0;
}

}  // namespace

std::string HostShmPrefix(int pid) {
  // Field 22 of /proc/<pid>/stat is the start time in clock ticks since boot; field 2
  // (the command name, in parentheses) may hold spaces, so count from its closing ')'.
  std::ifstream file(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return "";
  std::istringstream fields(stat.substr(paren + 1));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(fields >> field)) return "";
  }
  return absl::StrCat("/loadstar-", pid, "-", field, "-");
}

int RemoveStaleHostShm() {
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    std::string name = entry.path().filename().string();
    // "loadstar-<pid>-<start>-<n>" (or "loadstar-<pid>-<n>" from older builds).
    if (name.rfind("loadstar-", 0) != 0) continue;
    std::vector<std::string> fields = absl::StrSplit(name.substr(9), '-');
    int pid = 0;
    if (fields.size() < 2 || !absl::SimpleAtoi(fields[0], &pid) || pid <= 0) continue;
    std::string owner = HostShmPrefix(pid);
    bool owner_alive =
        !owner.empty() &&
        (fields.size() < 3 || owner == absl::StrCat("/loadstar-", pid, "-", fields[1], "-"));
    if (owner_alive) continue;
    if (::shm_unlink(("/" + name).c_str()) == 0) ++removed;
  }
  return removed;
}

HostDevice::HostDevice(int index, uint64_t memory_bytes, uint64_t retain_bytes)
    : index_(index), memory_bytes_(memory_bytes), retain_bytes_(retain_bytes) {}

absl::StatusOr<std::unique_ptr<HostDevice>> HostDevice::CreatePooled(int index,
                                                                       uint64_t memory_bytes) {
  std::unique_ptr<HostDevice> d(new HostDevice(index, PageRound(memory_bytes)));
  d->pool_bytes_ = d->memory_bytes_;
  d->pool_name_ = NextShmName();
  int fd = ::shm_open(d->pool_name_.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat(d->name(), ": shm_open ", d->pool_name_,
                                            " for its device memory pool: ",
                                            std::strerror(errno)));
  }
  auto fail = [&](std::string_view what, int err) {
    ::close(fd);
    ::shm_unlink(d->pool_name_.c_str());
    return absl::Status(
        err == ENOSPC || err == ENOMEM ? absl::StatusCode::kResourceExhausted
                                       : absl::StatusCode::kInternal,
        absl::StrCat(d->name(), ": ", std::string(what), " of its ", d->pool_bytes_,
                     "-byte device memory pool ", d->pool_name_, ": ", std::strerror(err)));
  };
  if (::ftruncate(fd, static_cast<off_t>(d->pool_bytes_)) != 0) return fail("ftruncate", errno);
  void* ptr = ::mmap(nullptr, d->pool_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ptr == MAP_FAILED) return fail("mmap", errno);
  d->pool_fd_ = fd;
  d->pool_ptr_ = static_cast<char*>(ptr);
  {
    absl::MutexLock lock(&d->mu_);
    d->free_ranges_[0] = d->pool_bytes_;
    d->populating_ = true;
  }
  HostDevice* raw = d.get();
  d->populator_ = std::thread([raw] { raw->Populate(); });
  return d;
}

void HostDevice::Populate() {
  const double start = MonotonicSeconds();
  uint64_t done = 0;
  int err = 0;
  while (done < pool_bytes_ && !stop_populating_.load(std::memory_order_relaxed)) {
    const uint64_t n = std::min(kPopulateStep, pool_bytes_ - done);
    err = PopulateRange(pool_fd_, pool_ptr_, done, n);
    if (err != 0) break;
    done += n;
    absl::MutexLock lock(&mu_);
    populated_end_ = done;
  }
  const double seconds = MonotonicSeconds() - start;
  absl::MutexLock lock(&mu_);
  populating_ = false;
  if (err != 0) {
    // Only what is populated can be handed out: the rest of the pool is gone.
    populate_error_ = absl::ResourceExhaustedError(absl::StrCat(
        name(), ": populating its device memory pool stopped at ", done, " of ", pool_bytes_,
        " bytes: ", std::strerror(err),
        err == EFAULT ? " (no room in /dev/shm; lower --device-memory)" : ""));
    spdlog::error("{}", std::string(populate_error_.message()));
  } else if (done == pool_bytes_) {
    spdlog::info("{}: device memory pool of {:.0f} MiB populated in {:.2f} s ({:.2f} GB/s)",
                 name(), static_cast<double>(pool_bytes_) / (1ull << 20), seconds,
                 seconds > 0 ? static_cast<double>(pool_bytes_) / seconds / 1e9 : 0.0);
  }
}

absl::Status HostDevice::WaitPopulated() const {
  absl::MutexLock lock(&mu_);
  if (!pooled()) return absl::OkStatus();
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !populating_; };
  mu_.Await(absl::Condition(&done));
  return populate_error_;
}

HostDevice::~HostDevice() {
  if (populator_.joinable()) {
    stop_populating_.store(true);
    populator_.join();
  }
  absl::MutexLock lock(&mu_);
  for (auto& [id, region] : regions_) {
    if (!pooled()) Unmap(region);
  }
  regions_.clear();
  for (const Region& region : retained_) Unmap(region);
  retained_.clear();
  if (pooled()) {
    ::munmap(pool_ptr_, pool_bytes_);
    ::close(pool_fd_);
    ::shm_unlink(pool_name_.c_str());
  }
}

uint64_t HostDevice::retained_bytes() const {
  absl::MutexLock lock(&mu_);
  return retained_bytes_;
}

std::optional<HostDevice::Region> HostDevice::TakeRetained(uint64_t mapped_size) {
  absl::MutexLock lock(&mu_);
  int best = -1;
  for (size_t i = 0; i < retained_.size(); ++i) {
    uint64_t size = retained_[i].mapped_size;
    if (size >= mapped_size && size <= 2 * mapped_size &&
        (best < 0 || size < retained_[best].mapped_size)) {
      best = static_cast<int>(i);
    }
  }
  if (best < 0) return std::nullopt;
  Region region = std::move(retained_[best]);
  retained_.erase(retained_.begin() + best);
  retained_bytes_ -= region.mapped_size;
  std::string fresh = NextShmName();
  if (::rename(ShmPath(region.shm_name).c_str(), ShmPath(fresh).c_str()) != 0) {
    Unmap(region);
    return std::nullopt;
  }
  region.shm_name = std::move(fresh);
  if (!region.populated) {
    // One batched pass installs the page-table entries (the pages already exist); from
    // then on this region is filled at memcpy speed, however often it is reused.
    region.populated =
        ::madvise(region.ptr, region.mapped_size, MADV_POPULATE_WRITE) == 0;
  }
  return region;
}

bool HostDevice::ReadsInPlace(const Allocation& allocation) const {
  absl::MutexLock lock(&mu_);
  auto it = regions_.find(allocation.id);
  return it != regions_.end() && it->second.populated && it->second.ptr == allocation.ptr;
}

absl::Status HostDevice::PrepareInPlaceWrite(const Allocation& allocation, uint64_t offset,
                                              uint64_t bytes) {
  absl::StatusOr<int> fd = CheckRange(allocation, offset, bytes);
  if (!fd.ok()) return fd.status();
  if (ReadsInPlace(allocation)) return absl::OkStatus();
  const int err = PopulateWrite(static_cast<char*>(allocation.ptr) + offset, bytes);
  // EINVAL: no POPULATE_WRITE (Linux < 5.14); the read then faults the pages in itself.
  if (err == 0 || err == EINVAL) return absl::OkStatus();
  return PopulateError(allocation, err);
}

absl::Status HostDevice::PopulateError(const Allocation& a, int err) const {
  std::string msg = absl::StrCat(name(), ": allocating pages of allocation ", a.id, ": ",
                                 std::strerror(err), " (/dev/shm full?)");
  if (err == ENOMEM || err == EFAULT || err == ENOSPC) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

std::string HostDevice::name() const { return absl::StrCat("host:", index_); }

uint64_t HostDevice::free_memory() const {
  absl::MutexLock lock(&mu_);
  return memory_bytes_ - used_bytes_;
}

int HostDevice::live_allocations() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(regions_.size());
}

void HostDevice::Unmap(const Region& region) {
  ::munmap(region.ptr, region.mapped_size);
  ::close(region.fd);
  ::shm_unlink(region.shm_name.c_str());
}

absl::StatusOr<Allocation> HostDevice::Allocate(uint64_t bytes) {
  if (pooled()) return AllocatePooled(bytes);
  {
    // Reserve the budget first so concurrent allocations cannot overshoot it together.
    absl::MutexLock lock(&mu_);
    if (bytes > memory_bytes_ - used_bytes_) {
      return absl::ResourceExhaustedError(
          absl::StrCat(name(), ": cannot allocate ", bytes, " bytes; ",
                       memory_bytes_ - used_bytes_, " of ", memory_bytes_, " free"));
    }
    used_bytes_ += bytes;
  }
  auto unreserve = [&] {
    absl::MutexLock lock(&mu_);
    used_bytes_ -= bytes;
  };
  if (std::optional<Region> reused = TakeRetained(PageRound(bytes))) {
    reused->size = bytes;
    absl::MutexLock lock(&mu_);
    Allocation allocation{next_id_++, reused->ptr, bytes};
    regions_.emplace(allocation.id, *std::move(reused));
    return allocation;
  }
  Region region;
  region.shm_name = NextShmName();
  region.size = bytes;
  region.mapped_size = PageRound(bytes);
  int fd = ::shm_open(region.shm_name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    unreserve();
    return absl::InternalError(
        absl::StrCat("shm_open ", region.shm_name, ": ", std::strerror(err)));
  }
  auto fail = [&](std::string_view what, int err) {
    ::close(fd);
    ::shm_unlink(region.shm_name.c_str());
    unreserve();
    std::string msg = absl::StrCat(name(), ": ", std::string(what), " ", region.shm_name,
                                   " (", region.mapped_size, " bytes): ", std::strerror(err));
    if (err == ENOSPC || err == ENOMEM) return absl::ResourceExhaustedError(msg);
    return absl::InternalError(msg);
  };
  if (::ftruncate(fd, static_cast<off_t>(region.mapped_size)) != 0) {
    return fail("ftruncate", errno);
  }
  void* ptr = ::mmap(nullptr, region.mapped_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ptr == MAP_FAILED) return fail("mmap", errno);
  region.fd = fd;
  region.ptr = ptr;

  absl::MutexLock lock(&mu_);
  Allocation allocation{next_id_++, ptr, bytes};
  regions_.emplace(allocation.id, std::move(region));
  return allocation;
}

absl::Status HostDevice::Free(const Allocation& allocation) {
  Region region;
  {
    absl::MutexLock lock(&mu_);
    auto it = regions_.find(allocation.id);
    if (it == regions_.end()) {
      return absl::NotFoundError(
          absl::StrCat(name(), ": no allocation ", allocation.id, " to free"));
    }
    region = std::move(it->second);
    regions_.erase(it);
    // Pooled: used_bytes_ is returned once the range is zeroed (FreePooled).
    if (!pooled()) used_bytes_ -= region.size;
    // Keep it for reuse while the retained total stays within budget.
    if (!pooled() &&
        region.mapped_size <= retain_bytes_ - std::min(retain_bytes_, retained_bytes_)) {
      std::string parked = NextShmName();
      if (::rename(ShmPath(region.shm_name).c_str(), ShmPath(parked).c_str()) == 0) {
        region.shm_name = std::move(parked);
        retained_bytes_ += region.mapped_size;
        retained_.push_back(std::move(region));
        return absl::OkStatus();
      }
    }
  }
  if (pooled()) {
    FreePooled(std::move(region));
  } else {
    Unmap(region);
  }
  return absl::OkStatus();
}

absl::StatusOr<Allocation> HostDevice::AllocatePooled(uint64_t bytes) {
  const uint64_t mapped = PageRound(bytes);
  absl::MutexLock lock(&mu_);
  // First fit by offset: low offsets are populated first, and packing low keeps the
  // large free range at the end.
  auto it = free_ranges_.begin();
  uint64_t largest = 0, free_total = 0;
  for (; it != free_ranges_.end(); ++it) {
    if (it->second >= mapped) break;
    largest = std::max(largest, it->second);
    free_total += it->second;
  }
  if (it == free_ranges_.end()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        name(), ": cannot allocate ", bytes, " bytes from its device memory pool; ",
        free_total, " of ", pool_bytes_, " bytes free, the largest free range ", largest,
        " bytes"));
  }
  const uint64_t offset = it->first, length = it->second;
  free_ranges_.erase(it);
  if (length > mapped) free_ranges_[offset + mapped] = length - mapped;
  used_bytes_ += mapped;
  // Writes go through the mapping: wait until the populator has passed the range.
  auto covered = [this, end = offset + mapped]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return populated_end_ >= end || !populating_;
  };
  mu_.Await(absl::Condition(&covered));
  if (populated_end_ < offset + mapped) {
    used_bytes_ -= mapped;
    AddFreeRangeLocked(offset, mapped);  // never written: still zero
    absl::Status why = populate_error_.ok()
                           ? absl::ResourceExhaustedError(absl::StrCat(
                                 name(), ": device memory pool population was stopped"))
                           : populate_error_;
    return absl::Status(why.code(), absl::StrCat("cannot allocate ", bytes, " bytes: ",
                                                 std::string(why.message())));
  }
  Region region;
  region.shm_name = pool_name_;
  region.fd = pool_fd_;
  region.offset = offset;
  region.ptr = pool_ptr_ + offset;
  region.size = bytes;
  region.mapped_size = mapped;
  region.populated = true;
  Allocation allocation{next_id_++, region.ptr, bytes};
  regions_.emplace(allocation.id, std::move(region));
  return allocation;
}

void HostDevice::FreePooled(Region region) {
  // The pool's invariant: free bytes are zero. The range is neither live nor free while
  // this runs, so nobody else touches it.
  std::memset(region.ptr, 0, region.mapped_size);
  absl::MutexLock lock(&mu_);
  used_bytes_ -= region.mapped_size;
  AddFreeRangeLocked(region.offset, region.mapped_size);
}

void HostDevice::AddFreeRangeLocked(uint64_t offset, uint64_t length) {
  auto next = free_ranges_.lower_bound(offset);
  if (next != free_ranges_.end() && next->first == offset + length) {
    length += next->second;
    next = free_ranges_.erase(next);
  }
  if (next != free_ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      prev->second += length;
      return;
    }
  }
  free_ranges_[offset] = length;
}

absl::StatusOr<int> HostDevice::CheckRange(const Allocation& a, uint64_t offset,
                                           uint64_t bytes) const {
  absl::MutexLock lock(&mu_);
  auto it = regions_.find(a.id);
  if (it == regions_.end() || it->second.ptr != a.ptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(name(), ": allocation ", a.id, " is not live"));
  }
  if (offset > it->second.size || bytes > it->second.size - offset) {
    return absl::OutOfRangeError(absl::StrCat(name(), ": range [", offset, ", +", bytes,
                                              ") is outside allocation ", a.id, " of ",
                                              it->second.size, " bytes"));
  }
  return it->second.fd;
}

absl::StatusOr<CopyTicket> HostDevice::CopyToDeviceAsync(const Allocation& dst,
                                                         uint64_t offset, const void* src,
                                                         uint64_t bytes) {
  absl::StatusOr<int> fd = CheckRange(dst, offset, bytes);
  if (!fd.ok()) return fd.status();
  if (ReadsInPlace(dst)) {
    // Mapped and resident: a copy whose stores bypass the cache (the device's bytes are
    // read later, by an engine): 15-18 GB/s here against glibc memcpy's 12-13.
    if (bytes != 0) CopyAroundCache(static_cast<char*>(dst.ptr) + offset, src, bytes);
    return CopyTicket{0};
  }
  if (dst.ptr != nullptr && bytes != 0) {
    // Fresh pages through the mapping: populated (and a full /dev/shm reported, where a
    // plain store would SIGBUS), then memcpy. Not pwrite: shmem's write path holds the
    // object's inode lock for every write, so the loader's threads filling one allocation
    // ran one at a time and the waiting ones spun on the lock (perf: 35% of a 4 GiB fresh
    // load's CPU in rwsem_spin_on_owner, 0.3 GB/s); page faults of one object run in
    // parallel. (Serializing pwrite in our own lock instead measured 0.64-0.87 GB/s for
    // 4 GiB, one writer, against 1.0-1.6 for two threads populating.)
    char* d = static_cast<char*>(dst.ptr) + offset;
    const int err = PopulateWrite(d, bytes);
    if (err == 0) {
      CopyAroundCache(d, src, bytes);
      return CopyTicket{0};
    }
    if (err != EINVAL) return PopulateError(dst, err);
    // EINVAL: a kernel before 5.14 (no POPULATE_WRITE): pwrite, which reports ENOSPC.
  }
  const char* p = static_cast<const char*>(src);
  while (bytes > 0) {
    ssize_t n = ::pwrite(*fd, p, bytes, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      std::string msg = absl::StrCat(name(), ": write to allocation ", dst.id, ": ",
                                     std::strerror(err));
      if (err == ENOSPC || err == ENOMEM) return absl::ResourceExhaustedError(msg);
      return absl::InternalError(msg);
    }
    p += n;
    offset += static_cast<uint64_t>(n);
    bytes -= static_cast<uint64_t>(n);
  }
  // The copy is already complete; 0 is the ticket of every completed copy.
  return CopyTicket{0};
}

absl::Status HostDevice::Wait(CopyTicket ticket) { return absl::OkStatus(); }

absl::Status HostDevice::CopyToHost(void* dst, const Allocation& src, uint64_t offset,
                                    uint64_t bytes) {
  absl::StatusOr<int> fd = CheckRange(src, offset, bytes);
  if (!fd.ok()) return fd.status();
  if (bytes != 0) std::memcpy(dst, static_cast<const char*>(src.ptr) + offset, bytes);
  return absl::OkStatus();
}

absl::StatusOr<ExportedHandle> HostDevice::Export(const Allocation& allocation) {
  absl::MutexLock lock(&mu_);
  auto it = regions_.find(allocation.id);
  if (it == regions_.end()) {
    return absl::NotFoundError(
        absl::StrCat(name(), ": no allocation ", allocation.id, " to export"));
  }
  ExportedHandle handle;
  handle.kind = DeviceKind::kHost;
  handle.shm_name = it->second.shm_name;
  handle.offset = it->second.offset;
  handle.size = it->second.size;
  return handle;
}

}  // namespace loadstar::loader
