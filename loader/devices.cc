// CreateDevices (declared in loader/device.h): parses a device spec.
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

absl::StatusOr<std::vector<std::unique_ptr<Device>>> MakeHostDevices(int n, uint64_t bytes,
                                                                     uint64_t retain) {
  // Reclaim what killed processes left behind before taking more host memory.
  static const int stale_removed = RemoveStaleHostShm();
  if (stale_removed > 0) {
    spdlog::info("removed {} shared-memory objects of loadstar processes that are gone",
                 stale_removed);
  }
  std::vector<std::unique_ptr<Device>> devices;
  for (int i = 0; i < n; ++i) devices.push_back(std::make_unique<HostDevice>(i, bytes, retain));
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
    const std::string& spec, uint64_t host_device_bytes, uint64_t host_retain_bytes) {
  if (spec == "cuda") return MakeCudaDevices();
  if (spec == "auto") {
    absl::StatusOr<DeviceBackend*> cuda = GetDeviceBackend("cuda");
    absl::Status usable = cuda.ok() ? (*cuda)->Usable() : cuda.status();
    if (usable.ok()) return (*cuda)->CreateDevices();
    spdlog::debug("devices auto: host:1 ({})", std::string(usable.message()));
    return MakeHostDevices(1, host_device_bytes, host_retain_bytes);
  }
  if (spec == "host") return MakeHostDevices(1, host_device_bytes, host_retain_bytes);
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
    if (host_device_bytes == 0) {
      return absl::InvalidArgumentError("host device memory must be positive");
    }
    return MakeHostDevices(n, host_device_bytes, host_retain_bytes);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device spec '", spec, "' (auto | cuda | host:N)"));
}

}  // namespace loadstar::loader
