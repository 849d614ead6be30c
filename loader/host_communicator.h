// HostCommunicator: the Communicator for host devices (emulated GPUs in shared host
// memory). Every transfer is a memcpy; large ones are split into chunks copied by a few
// threads, since one core cannot saturate memory bandwidth.
//
// Thread safety: as the Communicator contract says (calls serialized by a mutex).
#pragma once

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "loader/communicator.h"
#include "loader/device.h"

namespace loadstar::loader {

class HostCommunicator : public Communicator {
 public:
  struct Options {
    // Ranks; each buffer passed in must be host-addressable.
    int num_ranks = 1;
    // Threads copying one call's bytes; 0 means min(4, hardware threads).
    int num_threads = 0;
    // Copies below this many bytes in total run on the calling thread.
    uint64_t parallel_threshold = 4ull << 20;
  };

  // One rank per device, in order; every device must be DeviceKind::kHost.
  static absl::StatusOr<std::unique_ptr<HostCommunicator>> Create(
      const std::vector<Device*>& devices);
  static absl::StatusOr<std::unique_ptr<HostCommunicator>> Create(const Options& options);

  std::string name() const override { return "host"; }
  int size() const override { return options_.num_ranks; }

  absl::Status Broadcast(int root, std::span<const DeviceSpan> buffers,
                         uint64_t bytes) override;
  absl::Status Copy(const DeviceSpan& src, const DeviceSpan& dst) override;
  absl::Status Scatter(const DeviceSpan& src, std::span<const DeviceSpan> dsts,
                       uint64_t bytes_each) override;

 private:
  struct Transfer {
    void* dst;
    const void* src;
    uint64_t bytes;
  };

  explicit HostCommunicator(const Options& options) : options_(options) {}
  // Runs every transfer, in parallel chunks when large.
  void Run(const std::vector<Transfer>& transfers) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  absl::Mutex mu_;  // serializes calls (contract rule 4)
};

}  // namespace loadstar::loader
