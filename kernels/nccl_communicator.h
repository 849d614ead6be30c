// NcclCommunicator: the Communicator over the GPUs of one worker, as one NCCL clique
// created in-process with ncclCommInitAll (one ncclComm_t and one stream per GPU; rank r
// is the r-th ordinal given). Broadcast is ncclBroadcast on every rank inside one group
// call; Copy and Scatter are grouped ncclSend/ncclRecv pairs (NCCL has no scatter), and
// same-rank copies are cudaMemcpyAsync. Every call waits for its streams before it
// returns (contract rule 1 of base/communicator.h).
//
// A group that fails after some ranks' operations were enqueued cannot complete: the
// communicator is then aborted (ncclCommAbort on every rank) and every later call returns
// FailedPrecondition naming the first error.
//
// Thread safety: calls are serialized by a mutex, which also keeps every rank's
// collectives in the same order, as NCCL requires.
#pragma once

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/communicator.h"
#include "base/device.h"

namespace loadstar::kernels {

class NcclCommunicator : public Communicator {
 public:
  // One rank per CUDA ordinal, in order. Empty `ordinals`: every visible GPU.
  // FailedPrecondition "no usable GPU: ..." without a GPU.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(std::vector<int> ordinals = {});
  // One rank per device, in order; each must be a CudaDevice (InvalidArgument otherwise).
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> CreateForDevices(
      const std::vector<Device*>& devices);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  std::string name() const override { return "nccl"; }
  int size() const override { return static_cast<int>(ordinals_.size()); }

  absl::Status Broadcast(int root, std::span<const DeviceSpan> buffers,
                         uint64_t bytes) override;
  absl::Status Copy(const DeviceSpan& src, const DeviceSpan& dst) override;
  absl::Status Scatter(const DeviceSpan& src,
                       std::span<const DeviceSpan> dsts, uint64_t bytes_each) override;

 private:
  struct Impl;  // NCCL and CUDA handles; keeps nccl.h out of this header
  NcclCommunicator(std::vector<int> ordinals, std::unique_ptr<Impl> impl);
  // Waits for every rank's stream.
  absl::Status SyncAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FailedPrecondition once the communicator was aborted.
  absl::Status CheckUsable() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Inside an open group whose ops were only partly enqueued: ends the group, aborts every
  // rank's communicator and returns `error` with a note that it was aborted.
  absl::Status AbortPartialGroup(absl::Status error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::vector<int> ordinals_;
  absl::Mutex mu_;
  std::unique_ptr<Impl> impl_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::kernels
