// The Prometheus endpoint of a daemon process (SPEC §7 Operations): prometheus-cpp's
// Exposer serving GET /metrics on `--metrics-address`, over one registry that the
// controller's and workers' metrics (controller_metrics.h, worker_metrics.h) add to.
// `loadstar up` runs its controller and workers on one endpoint; worker series carry a
// `worker` label.
//
// Gauges that mirror live state (instances by state, cache use) are set by refresh hooks
// that each scrape runs first, so a scrape shows the state at that moment.
//
// Thread safety: prometheus-cpp's families and metrics are thread-safe; scrapes run on the
// Exposer's thread, which runs the hooks there; Add/RemoveRefresh from any thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace loadstar::daemon {

class MetricsServer {
 public:
  // `address` HOST:PORT; port 0 picks a free one. UNAVAILABLE when it cannot listen.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address);
  ~MetricsServer();

  prometheus::Registry& registry() { return *registry_; }
  // `refresh` runs at the start of every scrape until RemoveRefresh(id).
  int AddRefresh(std::function<void()> refresh);
  void RemoveRefresh(int id);
  // "host:port" with the port actually bound.
  const std::string& address() const { return address_; }

 private:
  class Scrape;
  MetricsServer() = default;
  void RunRefreshes();

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<Scrape> scrape_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
  absl::Mutex mu_;
  int next_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int, std::function<void()>> refreshes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::daemon
