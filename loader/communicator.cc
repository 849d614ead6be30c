#include "loader/communicator.h"

#include "loader/host_communicator.h"
#ifdef LOADSTAR_HAVE_NCCL
#include "kernels/nccl_communicator.h"  // no CUDA headers: the NCCL state is behind a pimpl
#endif

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
#ifdef LOADSTAR_HAVE_NCCL
  auto comm = kernels::NcclCommunicator::CreateForDevices(devices);
  if (!comm.ok()) return comm.status();
  return std::unique_ptr<Communicator>(std::move(comm).value());
#else
  return absl::FailedPreconditionError(
      "CUDA devices need NCCL, and loadstar was built without it");
#endif
}

}  // namespace loadstar::loader
