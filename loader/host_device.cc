#include "loader/host_device.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

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

HostDevice::~HostDevice() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, region] : regions_) Unmap(region);
  regions_.clear();
  for (const Region& region : retained_) Unmap(region);
  retained_.clear();
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
    used_bytes_ -= region.size;
    // Keep it for reuse while the retained total stays within budget.
    if (region.mapped_size <= retain_bytes_ - std::min(retain_bytes_, retained_bytes_)) {
      std::string parked = NextShmName();
      if (::rename(ShmPath(region.shm_name).c_str(), ShmPath(parked).c_str()) == 0) {
        region.shm_name = std::move(parked);
        retained_bytes_ += region.mapped_size;
        retained_.push_back(std::move(region));
        return absl::OkStatus();
      }
    }
  }
  Unmap(region);
  return absl::OkStatus();
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
    // Mapped and resident: a plain memcpy is the fastest copy there is.
    if (bytes != 0) std::memcpy(static_cast<char*>(dst.ptr) + offset, src, bytes);
    return CopyTicket{0};
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
  handle.size = it->second.size;
  return handle;
}

}  // namespace loadstar::loader
