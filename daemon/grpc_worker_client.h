// WorkerClient over gRPC, one cached channel per worker address.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/rpc_util.h"
#include "daemon/worker_client.h"

namespace loadstar::daemon {

class GrpcWorkerClientFactory : public WorkerClientFactory {
 public:
  explicit GrpcWorkerClientFactory(ClientSecurity security) : security_(std::move(security)) {}
  std::shared_ptr<WorkerClient> ForAddress(const std::string& address) override;

 private:
  const ClientSecurity security_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<WorkerClient>> clients_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::daemon
