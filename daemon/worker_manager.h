// WorkerManager: the instances one worker holds (the per-instance state machine
// loading -> ready, or failed/cancelled -> gone) over an InstanceLoader. The gRPC Worker
// service (worker_service.h) is a thin adapter over it; tests call it directly.
//
// Thread safety: every method is thread-safe. Unload of a loading instance cancels the
// load; the LoadInstance call then returns CANCELLED after the loader has freed its memory.
// A reader (GetInstance/ReadTensor) holds the instance alive, so an Unload racing a read
// frees the memory when the read ends.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/instance_loader.h"
#include "loadstar/v1/worker.pb.h"

namespace loadstar::daemon {

class WorkerManager {
 public:
  WorkerManager(std::string worker_id, std::string address, InstanceLoader* loader);

  // Loads an instance; `progress` is called from the loading thread and returns false to
  // cancel (the client went away). ALREADY_EXISTS if the id is taken.
  absl::StatusOr<loadstar::v1::InstanceReport> Load(
      const loadstar::v1::LoadInstanceRequest& request,
      const std::function<bool(const LoadProgressInfo&)>& progress);
  // NOT_FOUND if unknown. Cancels a running load.
  absl::Status Unload(const std::string& instance_id);
  absl::StatusOr<loadstar::v1::InstanceHandle> GetInstance(const std::string& instance_id);
  // Streams `length` bytes (0: to the end) of a tensor from `offset` in chunks to `sink`,
  // which returns false to stop.
  absl::Status ReadTensor(const loadstar::v1::ReadTensorRequest& request,
                          const std::function<bool(uint64_t, std::string_view)>& sink);
  // Streams a kept non-weight file of a stored model (InstanceLoader::ReadModelFile) in
  // chunks to `sink` (one empty chunk for an empty file).
  absl::Status ReadModelFile(const loadstar::v1::ReadModelFileRequest& request,
                             const std::function<bool(uint64_t, std::string_view)>& sink);
  absl::StatusOr<loadstar::v1::ProbeResponse> Probe(const loadstar::v1::ProbeRequest& request);

  std::vector<loadstar::v1::InstanceReport> Instances() const;
  // Registration / heartbeat payload: devices, inventory, bandwidths, instances.
  loadstar::v1::WorkerInfo Info() const;
  InstanceLoader* loader() const { return loader_; }
  std::string worker_id() const;
  // Sets the id and advertised address (known once the server has bound its port).
  void SetIdentity(std::string worker_id, std::string address);

 private:
  struct Instance {
    loadstar::v1::InstanceReport report;
    std::shared_ptr<loader::CancellationToken> cancelled =
        std::make_shared<loader::CancellationToken>();
    std::shared_ptr<const LoadedInstance> loaded;  // null while loading
    loadstar::v1::InstanceHandle handle;           // cached when ready
  };

  // The ready instance `id` with its handle, or NOT_FOUND / FAILED_PRECONDITION.
  absl::StatusOr<std::shared_ptr<const LoadedInstance>> Ready(
      const std::string& id, loadstar::v1::InstanceHandle* handle) const;

  InstanceLoader* const loader_;
  mutable absl::Mutex mu_;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  std::string address_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Instance> instances_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::daemon
