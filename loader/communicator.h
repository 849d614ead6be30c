// The loader's communicators: the Communicator vocabulary (base/communicator.h, which
// kernels/ implements with NCCL) under the loader's names, and CreateCommunicator.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "base/communicator.h"
#include "loader/device.h"

namespace loadstar::loader {

using ::loadstar::Communicator;
using ::loadstar::DeviceSpan;
namespace communicator_internal = ::loadstar::communicator_internal;

// The communicator over `devices` (rank r = devices[r]): HostCommunicator for host
// devices; for CUDA devices the backend that made them (NcclCommunicator in the CUDA
// module; FailedPrecondition when it was built without NCCL). Empty, null or mixed-kind
// device lists are InvalidArgument.
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    const std::vector<Device*>& devices);

}  // namespace loadstar::loader
