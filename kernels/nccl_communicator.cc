#include "kernels/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda_device.h"
#include "kernels/cuda_status.h"

// NCCL's counterpart of CUDA_RETURN_IF_ERROR: the call text, ncclGetErrorString and
// file:line in an absl::Status (ncclSystemError/ncclRemoteError -> Unavailable).
#define NCCL_RETURN_IF_ERROR(expr)                                                     \
  do {                                                                                 \
    const ncclResult_t loadstar_nccl_result_ = (expr);                                 \
    if (loadstar_nccl_result_ != ncclSuccess) {                                        \
      return NcclError(loadstar_nccl_result_, #expr, __FILE__, __LINE__);              \
    }                                                                                  \
  } while (0)

namespace loadstar::kernels {
namespace ci = communicator_internal;

namespace {

absl::Status NcclError(ncclResult_t result, const char* expr, const char* file, int line) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  if (result == ncclInvalidArgument || result == ncclInvalidUsage) {
    code = absl::StatusCode::kInvalidArgument;
  } else if (result == ncclSystemError || result == ncclRemoteError) {
    code = absl::StatusCode::kUnavailable;
  }
  static_cast<void>(cudaGetLastError());  // as CudaError: a failed CUDA call inside NCCL
  return absl::Status(code, absl::StrCat(expr, " failed: ", ncclGetErrorString(result),
                                         " at ", SourceBaseName(file), ":", line));
}

}  // namespace

struct NcclCommunicator::Impl {
  std::vector<ncclComm_t> comms;  // nullptr once aborted
  std::vector<cudaStream_t> streams;
  // Set when a group failed after some ranks' operations were enqueued: the communicator
  // was aborted and every later call fails with this reason.
  std::string aborted;
};

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    std::vector<int> ordinals) {
  auto count = UsableGpuCount();
  if (!count.ok()) return count.status();
  if (ordinals.empty()) {
    for (int i = 0; i < *count; ++i) ordinals.push_back(i);
  }
  for (int o : ordinals) {
    if (o < 0 || o >= *count) {
      return absl::InvalidArgumentError(
          absl::StrCat("no CUDA device ", o, " (", *count, " visible)"));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->comms.resize(ordinals.size());
  NCCL_RETURN_IF_ERROR(
      ncclCommInitAll(impl->comms.data(), static_cast<int>(ordinals.size()), ordinals.data()));
  // From here the destructor owns the comms and whatever streams were made.
  std::unique_ptr<NcclCommunicator> comm(new NcclCommunicator(ordinals, std::move(impl)));
  absl::MutexLock lock(&comm->mu_);
  for (int o : ordinals) {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(o));
    cudaStream_t s = nullptr;
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    comm->impl_->streams.push_back(s);
  }
  return comm;
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::CreateForDevices(
    const std::vector<Device*>& devices) {
  std::vector<int> ordinals;
  for (size_t i = 0; i < devices.size(); ++i) {
    const auto* cuda = dynamic_cast<const CudaDevice*>(devices[i]);
    if (cuda == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "NcclCommunicator needs CUDA devices; rank ", i, " is ",
          devices[i] == nullptr ? std::string("null") : devices[i]->name()));
    }
    ordinals.push_back(cuda->ordinal());
  }
  if (ordinals.empty()) return absl::InvalidArgumentError("a communicator needs devices");
  return Create(std::move(ordinals));
}

NcclCommunicator::NcclCommunicator(std::vector<int> ordinals, std::unique_ptr<Impl> impl)
    : ordinals_(std::move(ordinals)), impl_(std::move(impl)) {}

NcclCommunicator::~NcclCommunicator() {
  absl::MutexLock lock(&mu_);
  for (size_t r = 0; r < impl_->streams.size(); ++r) {
    CUDA_IGNORE_ERROR(cudaSetDevice(ordinals_[r]));
    CUDA_IGNORE_ERROR(cudaStreamSynchronize(impl_->streams[r]));
    CUDA_IGNORE_ERROR(cudaStreamDestroy(impl_->streams[r]));
  }
  for (ncclComm_t c : impl_->comms) {
    if (c != nullptr) static_cast<void>(ncclCommDestroy(c));
  }
}

absl::Status NcclCommunicator::CheckUsable() const {
  if (impl_->aborted.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("NCCL communicator was aborted after: ", impl_->aborted));
}

absl::Status NcclCommunicator::AbortPartialGroup(absl::Status error) {
  // Some ranks' operations are in the open group and others are not: completing the group
  // would leave the enqueued ranks waiting forever for peers that never join (NCCL
  // versions that drop a failed group at ncclGroupEnd are fine too: abort is then merely
  // conservative). Close the group, then abort every rank, which also stops kernels that
  // were launched.
  static_cast<void>(ncclGroupEnd());
  for (ncclComm_t& c : impl_->comms) {
    if (c != nullptr) static_cast<void>(ncclCommAbort(c));
    c = nullptr;
  }
  static_cast<void>(cudaGetLastError());
  impl_->aborted = std::string(error.message());
  return absl::Status(error.code(),
                      absl::StrCat(error.message(), "; communicator aborted (partial group)"));
}

absl::Status NcclCommunicator::SyncAll() {
  for (int r = 0; r < size(); ++r) {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinals_[r]));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->streams[r]));
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Broadcast(int root, std::span<const DeviceSpan> buffers,
                                         uint64_t bytes) {
  absl::Status s = ci::CheckBroadcast(root, buffers, bytes, size());
  if (!s.ok() || bytes == 0) return s;
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckUsable());
  // Single-process multi-GPU: every rank's call inside one group, or the first would
  // block waiting for the others.
  NCCL_RETURN_IF_ERROR(ncclGroupStart());
  for (int r = 0; r < size(); ++r) {
    const ncclResult_t result =
        ncclBroadcast(buffers[root].data, buffers[r].data, bytes, ncclUint8, root,
                      impl_->comms[r], impl_->streams[r]);
    if (result != ncclSuccess) {
      const absl::Status error = NcclError(result, "ncclBroadcast", __FILE__, __LINE__);
      if (r > 0) return AbortPartialGroup(error);  // ranks 0..r-1 are enqueued
      static_cast<void>(ncclGroupEnd());            // nothing enqueued: an empty group
      return error;
    }
  }
  NCCL_RETURN_IF_ERROR(ncclGroupEnd());
  return SyncAll();
}

absl::Status NcclCommunicator::Copy(const DeviceSpan& src,
                                    const DeviceSpan& dst) {
  absl::Status s = ci::CheckCopy(src, dst, size());
  if (!s.ok() || src.size == 0 || src.data == dst.data) return s;
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckUsable());
  if (src.rank == dst.rank) {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinals_[src.rank]));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst.data, src.data, src.size, cudaMemcpyDeviceToDevice,
                                         impl_->streams[src.rank]));
  } else {
    NCCL_RETURN_IF_ERROR(ncclGroupStart());
    const ncclResult_t sent = ncclSend(src.data, src.size, ncclUint8, dst.rank,
                                       impl_->comms[src.rank], impl_->streams[src.rank]);
    if (sent != ncclSuccess) {
      static_cast<void>(ncclGroupEnd());  // nothing enqueued
      NCCL_RETURN_IF_ERROR(sent);
    }
    const ncclResult_t received = ncclRecv(dst.data, src.size, ncclUint8, src.rank,
                                           impl_->comms[dst.rank], impl_->streams[dst.rank]);
    if (received != ncclSuccess) {  // the send is enqueued without its receive
      return AbortPartialGroup(NcclError(received, "ncclRecv", __FILE__, __LINE__));
    }
    NCCL_RETURN_IF_ERROR(ncclGroupEnd());
  }
  return SyncAll();
}

absl::Status NcclCommunicator::Scatter(const DeviceSpan& src,
                                       std::span<const DeviceSpan> dsts,
                                       uint64_t bytes_each) {
  absl::Status s = ci::CheckScatter(src, dsts, bytes_each, size());
  if (!s.ok() || bytes_each == 0) return s;
  const int root = src.rank;
  const char* base = static_cast<const char*>(src.data);
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckUsable());
  const char* own = base + static_cast<uint64_t>(root) * bytes_each;
  if (dsts[root].data != own) {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinals_[root]));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dsts[root].data, own, bytes_each,
                                         cudaMemcpyDeviceToDevice, impl_->streams[root]));
  }
  NCCL_RETURN_IF_ERROR(ncclGroupStart());
  int enqueued = 0;  // sends and receives in the open group
  for (int r = 0; r < size(); ++r) {
    if (r == root) continue;
    ncclResult_t result =
        ncclSend(base + static_cast<uint64_t>(r) * bytes_each, bytes_each, ncclUint8, r,
                 impl_->comms[root], impl_->streams[root]);
    if (result == ncclSuccess) {
      ++enqueued;
      result = ncclRecv(dsts[r].data, bytes_each, ncclUint8, root, impl_->comms[r],
                        impl_->streams[r]);
    }
    if (result != ncclSuccess) {
      const absl::Status error = NcclError(result, "ncclSend/ncclRecv", __FILE__, __LINE__);
      if (enqueued > 0) return AbortPartialGroup(error);
      static_cast<void>(ncclGroupEnd());
      return error;
    }
    ++enqueued;
  }
  NCCL_RETURN_IF_ERROR(ncclGroupEnd());
  return SyncAll();
}

}  // namespace loadstar::kernels
