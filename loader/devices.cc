// CreateDevices (declared in loader/device.h): parses a device spec.
#include <sys/statvfs.h>

#include <charconv>

#include "absl/strings/str_cat.h"
#include "loader/device.h"
#include "loader/device_backends.h"
#include "loader/host_device.h"
#include "spdlog/spdlog.h"

namespace loadstar::loader {
namespace {

// More emulated devices than any real server has GPUs is a typo, not a plan.
constexpr int kMaxHostDevices = 64;

absl::StatusOr<std::vector<std::unique_ptr<Device>>> MakeHostDevices(
    int n, uint64_t bytes, uint64_t retain, HostMemory memory) {
  if (bytes == 0) return absl::InvalidArgumentError("host device memory must be positive");
  // Reclaim what killed processes left behind before taking more host memory.
  static const int stale_removed = RemoveStaleHostShm();
  if (stale_removed > 0) {
    spdlog::info("removed {} shared-memory objects of loadstar processes that are gone",
                 stale_removed);
  }
  if (memory == HostMemory::kPooled) {
    // The pools are populated in the background; refuse now what cannot fit rather than
    // fail there (population stops where /dev/shm is full; see HostDevice).
    struct statvfs fs;
    if (::statvfs("/dev/shm", &fs) == 0) {
      const uint64_t room = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
      if (room / static_cast<uint64_t>(n) < bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "device memory pools of ", n, " x ", bytes, " bytes do not fit in /dev/shm (",
            room, " bytes free): lower the device memory, or turn the pool off "
            "(device_memory_pool: false / --device-memory-pool false)"));
      }
    }
  }
  std::vector<std::unique_ptr<Device>> devices;
  for (int i = 0; i < n; ++i) {
    if (memory == HostMemory::kPooled) {
      absl::StatusOr<std::unique_ptr<HostDevice>> pooled = HostDevice::CreatePooled(i, bytes);
      if (!pooled.ok()) return pooled.status();
      devices.push_back(*std::move(pooled));
    } else {
      devices.push_back(std::make_unique<HostDevice>(i, bytes, retain));
    }
  }
  return devices;
}

// Through the registry, which loads the CUDA module on first use (device_backends.h).
absl::StatusOr<std::vector<std::unique_ptr<Device>>> MakeCudaDevices() {
  absl::StatusOr<DeviceBackend*> cuda = GetDeviceBackend("cuda");
  if (!cuda.ok()) return cuda.status();
  return (*cuda)->CreateDevices();
}

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Device>>> CreateDevices(
    const std::string& spec, uint64_t host_device_bytes, uint64_t host_retain_bytes,
    HostMemory host_memory) {
  if (host_memory == HostMemory::kPooled && host_retain_bytes != 0) {
    return absl::InvalidArgumentError(
        "pooled host-device memory keeps all of its memory; host_retain_bytes must be 0");
  }
  if (spec == "cuda") return MakeCudaDevices();
  if (spec == "auto") {
    absl::StatusOr<DeviceBackend*> cuda = GetDeviceBackend("cuda");
    absl::Status usable = cuda.ok() ? (*cuda)->Usable() : cuda.status();
    if (usable.ok()) return (*cuda)->CreateDevices();
    spdlog::debug("devices auto: host:1 ({})", std::string(usable.message()));
    return MakeHostDevices(1, host_device_bytes, host_retain_bytes, host_memory);
  }
  if (spec == "host") return MakeHostDevices(1, host_device_bytes, host_retain_bytes, host_memory);
  if (spec.rfind("host:", 0) == 0) {
    std::string_view count(spec);
    count.remove_prefix(5);
    int n = 0;
    auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
    if (ec != std::errc() || end != count.data() + count.size() || n < 1 ||
        n > kMaxHostDevices) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device spec '", spec, "': host:N needs N in 1..", kMaxHostDevices));
    }
    return MakeHostDevices(n, host_device_bytes, host_retain_bytes, host_memory);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device spec '", spec, "' (auto | cuda | host:N)"));
}

}  // namespace loadstar::loader
