// The exact footprint of a deployment (issue 8 item 5): a worker that holds the model
// plans the load from its store (Worker.PlanLoad: quantized sizes, quant state, casts,
// shards, alignment) and the scheduler reserves those bytes instead of
// EstimateLoadedBytes' guess. Deploy asks synchronously, so a config that can never load
// is refused at the door with the worker's reason; recovered or re-saved deployments are
// planned again in the background.
#include <fmt/format.h>

#include <algorithm>

#include "base/logging.h"
#include "daemon/controller.h"
#include "daemon/load_spec.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

namespace {
// After a worker could not plan (unreachable, busy): the next background attempt.
constexpr int64_t kFootprintRetryMs = 5000;
}  // namespace

std::pair<uint64_t, std::string> Controller::ModelListingLocked(const std::string& model) {
  std::pair<uint64_t, std::string> best{0, ""};
  for (const auto& [id, entry] : workers_.entries()) {
    if (entry.lost) continue;
    for (const v1::StoredModel& m : entry.info.models()) {
      if (m.name() == model && m.bytes() > best.first) best = {m.bytes(), entry.info.address()};
    }
  }
  return best;
}

absl::StatusOr<std::optional<std::vector<uint64_t>>> Controller::PlanFootprint(
    const DeploymentConfig& config, const std::string& address) {
  absl::StatusOr<v1::PlanLoadResponse> plan =
      options_.workers->ForAddress(address)->PlanLoad(ToLoadSpec(config));
  if (!plan.ok()) {
    const absl::StatusCode code = plan.status().code();
    if (code == absl::StatusCode::kInvalidArgument ||
        code == absl::StatusCode::kResourceExhausted ||
        code == absl::StatusCode::kFailedPrecondition) {
      return absl::Status(code, fmt::format("deployment '{}' cannot load model '{}': {}",
                                            config.name, config.model,
                                            std::string(plan.status().message())));
    }
    Log(Level::warn, "controller", {{"deployment", config.name}},
        "no footprint for {} from {} ({}); placement estimates it", config.name, address,
        plan.status().ToString());
    return std::nullopt;
  }
  if (plan->device_bytes_size() != static_cast<int>(std::max<uint32_t>(config.num_gpus, 1))) {
    Log(Level::warn, "controller", {{"deployment", config.name}},
        "worker {} planned {} devices for {} (num_gpus {}); placement estimates it", address,
        plan->device_bytes_size(), config.name, config.num_gpus);
    return std::nullopt;
  }
  return std::vector<uint64_t>(plan->device_bytes().begin(), plan->device_bytes().end());
}

void Controller::ForgetFootprintsLocked(const std::string& model) {
  for (auto& [name, d] : deployments_) {
    if (d.config.model != model) continue;
    d.footprint.clear();
    d.footprint_planned = false;
    d.footprint_retry_ms = 0;
  }
}

void Controller::RefreshFootprintLocked(const std::string& name, Deployment& d) {
  const int64_t now = options_.clock->NowMillis();
  if (d.footprint_planned || d.footprint_pending || now < d.footprint_retry_ms) return;
  // Named copies, not a structured binding: the fuzz build's clang 14 cannot capture one.
  const std::pair<uint64_t, std::string> listing = ModelListingLocked(d.config.model);
  const uint64_t bytes = listing.first;
  const std::string address = listing.second;
  if (bytes == 0) return;  // no live worker lists the model
  d.footprint_pending = true;
  tasks_.Spawn([this, name, config = d.config, digest = d.digest, address] {
    absl::StatusOr<std::optional<std::vector<uint64_t>>> planned = PlanFootprint(config, address);
    absl::MutexLock lock(&mu_);
    auto it = deployments_.find(name);
    if (it == deployments_.end() || it->second.digest != digest) return;  // gone or updated
    Deployment& dep = it->second;
    dep.footprint_pending = false;
    if (planned.ok() && !planned->has_value()) {  // unknown: asked again a little later
      dep.footprint_retry_ms = options_.clock->NowMillis() + kFootprintRetryMs;
      return;
    }
    // A refusal is planned too: its load fails the same way and backs off; no plan loop.
    dep.footprint_planned = true;
    if (planned.ok()) {
      dep.footprint = **planned;
    } else {
      dep.footprint.clear();
      Log(Level::warn, "controller", {{"deployment", name}}, "{}",
          std::string(planned.status().message()));
    }
  });
}

}  // namespace loadstar::daemon
