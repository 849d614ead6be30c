#include "daemon/leader_election.h"

#include "base/logging.h"

namespace loadstar::daemon {

namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

LeaderElection::LeaderElection(Options options) : options_(std::move(options)) {}

LeaderElection::~LeaderElection() { Stop(); }

void LeaderElection::Start() { thread_ = std::thread([this] { Loop(); }); }

void LeaderElection::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool LeaderElection::is_leader() const {
  absl::MutexLock lock(&mu_);
  return leader_;
}

std::string LeaderElection::leader() const {
  absl::MutexLock lock(&mu_);
  return leader_address_;
}

bool LeaderElection::Campaign(int64_t lease, int64_t* create_revision) {
  etcdserverpb::TxnRequest txn;
  etcdserverpb::Compare* absent = txn.add_compare();
  absent->set_key(options_.key);
  absent->set_target(etcdserverpb::Compare::CREATE);
  absent->set_result(etcdserverpb::Compare::EQUAL);
  absent->set_create_revision(0);  // the key does not exist
  etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(options_.key);
  put->set_value(options_.identity);
  put->set_lease(lease);
  txn.add_failure()->mutable_request_range()->set_key(options_.key);
  absl::StatusOr<etcdserverpb::TxnResponse> r = options_.etcd->Txn(txn);
  if (!r.ok()) return false;
  if (r->succeeded()) {
    // The put is the transaction's only write: the key was created at its revision.
    *create_revision = r->header().revision();
    absl::MutexLock lock(&mu_);
    leader_address_ = options_.identity;
    return true;
  }
  const etcdserverpb::RangeResponse& current = r->responses(0).response_range();
  absl::MutexLock lock(&mu_);
  leader_address_ = current.kvs_size() > 0 ? current.kvs(0).value() : "";
  return false;
}

void LeaderElection::Loop() {
  const auto ttl = std::chrono::seconds(options_.ttl_seconds);
  const auto refresh = std::chrono::milliseconds(options_.ttl_seconds * 1000 / 3);
  int64_t lease = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                               absl::FromChrono(options_.poll_interval))) {
        break;
      }
    }
    if (lease == 0) {
      absl::StatusOr<int64_t> granted = options_.etcd->GrantLease(options_.ttl_seconds);
      if (!granted.ok()) continue;
      lease = *granted;
    }
    int64_t revision = 0;
    if (!Campaign(lease, &revision)) {
      // A follower's lease only has to outlive its next attempt: keep it alive.
      if (!options_.etcd->KeepAlive(lease).ok()) lease = 0;
      continue;
    }
    Clock::time_point refreshed = Clock::now();
    {
      absl::MutexLock lock(&mu_);
      leader_ = true;
    }
    Log(Level::info, "controller", {{"leader", options_.identity}},
        "elected leader (fence revision {})", revision);
    absl::Status elected = options_.on_elected ? options_.on_elected(revision) : absl::OkStatus();
    bool stop = false;
    if (!elected.ok()) {
      Log(Level::warn, "controller", {}, "giving up the leadership: {}",
          std::string(elected.message()));
    }
    while (elected.ok()) {
      {
        absl::MutexLock lock(&mu_);
        if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::FromChrono(refresh))) {
          stop = true;
          break;
        }
      }
      absl::StatusOr<int64_t> kept = options_.etcd->KeepAlive(lease);
      if (kept.ok()) {
        refreshed = Clock::now();
      } else if (absl::IsNotFound(kept.status())) {
        Log(Level::warn, "controller", {}, "lost the leadership: {}",
            std::string(kept.status().message()));
        break;
      } else if (Clock::now() - refreshed >= ttl) {
        // etcd may have expired the lease by now; the fence stops any write meanwhile.
        Log(Level::warn, "controller", {}, "lost the leadership: lease not refreshed for {} s",
            options_.ttl_seconds);
        break;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      leader_ = false;
      leader_address_.clear();
    }
    if (options_.on_deposed) options_.on_deposed();
    // A new lease for the next campaign; the old one is revoked so the key goes now.
    options_.etcd->RevokeLease(lease).IgnoreError();
    lease = 0;
    if (stop) return;
  }
  if (lease != 0) options_.etcd->RevokeLease(lease).IgnoreError();
}

}  // namespace loadstar::daemon
