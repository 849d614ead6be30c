#include "loader/communicator.h"

#include "absl/strings/str_cat.h"
#include "loader/device_backends.h"
#include "loader/host_communicator.h"

namespace loadstar::loader {

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    const std::vector<Device*>& devices) {
  if (devices.empty()) return absl::InvalidArgumentError("a communicator needs devices");
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("device ", i, " is null"));
    }
    if (devices[i]->kind() != devices[0]->kind()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot mix ", devices[0]->name(),
                                                     " and ", devices[i]->name(),
                                                     " in one communicator"));
    }
  }
  if (devices[0]->kind() == DeviceKind::kHost) {
    auto comm = HostCommunicator::Create(devices);
    if (!comm.ok()) return comm.status();
    return std::unique_ptr<Communicator>(std::move(comm).value());
  }
  DeviceBackend* backend = BackendOf(*devices[0]);
  if (backend == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("no device backend provides ", devices[0]->name()));
  }
  return backend->CreateCommunicator(devices);
}

}  // namespace loadstar::loader
