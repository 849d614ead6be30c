#include "daemon/metrics_server.h"

#include <fmt/format.h>

#include <exception>

#include "prometheus/collectable.h"
#include "prometheus/exposer.h"

namespace loadstar::daemon {

// What the Exposer collects: the registry, after the refresh hooks have set the gauges.
class MetricsServer::Scrape : public prometheus::Collectable {
 public:
  explicit Scrape(MetricsServer* server) : server_(server) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    server_->RunRefreshes();
    return server_->registry_->Collect();
  }

 private:
  MetricsServer* const server_;
};

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address) {
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->registry_ = std::make_shared<prometheus::Registry>();
  s->scrape_ = std::make_shared<Scrape>(s.get());
  try {
    // One thread serves scrapes: a scrape every few seconds needs no more.
    s->exposer_ = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        fmt::format("metrics: cannot listen on {} (in use?): {}", address, e.what()));
  }
  std::vector<int> ports = s->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(fmt::format("metrics: cannot listen on {}", address));
  }
  size_t colon = address.rfind(':');
  s->address_ = fmt::format("{}:{}", address.substr(0, colon), ports.front());
  s->exposer_->RegisterCollectable(s->scrape_);
  return s;
}

// The Exposer (and its scrape thread) stops first, before the hooks' owners are gone.
MetricsServer::~MetricsServer() { exposer_.reset(); }

int MetricsServer::AddRefresh(std::function<void()> refresh) {
  absl::MutexLock lock(&mu_);
  refreshes_[next_id_] = std::move(refresh);
  return next_id_++;
}

void MetricsServer::RemoveRefresh(int id) {
  absl::MutexLock lock(&mu_);
  refreshes_.erase(id);
}

void MetricsServer::RunRefreshes() {
  // Held across the hooks so RemoveRefresh returns only once its hook can no longer run.
  absl::MutexLock lock(&mu_);
  for (auto& [id, refresh] : refreshes_) refresh();
}

}  // namespace loadstar::daemon
