#include "daemon/etcd_state_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <type_traits>
#include <variant>

#include "absl/strings/escaping.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace loadstar::daemon {
namespace {

using nlohmann::json;

// Keys are read back page by page so no response nears gRPC's or etcd's size limits.
constexpr int64_t kRangePage = 256;

json ToJson(const DeploymentRecord& r) {
  json j = {{"name", r.name}, {"config_yaml", r.config_yaml}, {"created_unix_ms", r.created_unix_ms}};
  if (!r.failed_message.empty()) {
    j["failed_message"] = r.failed_message;
    j["last_error_code"] = r.last_error_code;
    j["last_error_message"] = r.last_error_message;
  }
  return j;
}
json ToJson(const InstanceRecord& r) {
  return {{"instance_id", r.instance_id}, {"deployment", r.deployment},
          {"worker_id", r.worker_id},     {"state", r.state},
          {"idle_since_unix_ms", r.idle_since_unix_ms}, {"devices", r.devices},
          {"bytes_per_device", r.bytes_per_device},     {"config_digest", r.config_digest}};
}
json ToJson(const LeaseRecord& r) {
  return {{"lease_id", r.lease_id},          {"deployment", r.deployment},
          {"instance_id", r.instance_id},    {"expires_unix_ms", r.expires_unix_ms},
          {"ttl_seconds", r.ttl_seconds}};
}
json ToJson(const WorkerRecord& r) {
  return {{"worker_id", r.worker_id}, {"address", r.address},
          {"info", absl::Base64Escape(r.info)},
          {"last_heartbeat_unix_ms", r.last_heartbeat_unix_ms}};
}

// Parses one stored value; a value another program wrote wrongly is DATA_LOSS naming the key.
template <typename Record>
absl::StatusOr<Record> FromJson(const mvccpb::KeyValue& kv) {
  json j = json::parse(kv.value(), nullptr, /*allow_exceptions=*/false);
  auto bad = [&] {
    return absl::DataLossError(fmt::format("etcd key {} holds no loadstar record", kv.key()));
  };
  if (!j.is_object()) return bad();
  try {
    Record r;
    if constexpr (std::is_same_v<Record, DeploymentRecord>) {
      // The failed-state keys are absent for an active deployment (and in records written
      // before they existed).
      r = {j.at("name"), j.at("config_yaml"), j.at("created_unix_ms"),
           j.value("failed_message", std::string()), j.value("last_error_code", int32_t{0}),
           j.value("last_error_message", std::string())};
    } else if constexpr (std::is_same_v<Record, InstanceRecord>) {
      r = {j.at("instance_id"), j.at("deployment"), j.at("worker_id"), j.at("state"),
           j.at("idle_since_unix_ms"), j.at("devices"), j.at("bytes_per_device"),
           j.at("config_digest")};
    } else if constexpr (std::is_same_v<Record, LeaseRecord>) {
      r = {j.at("lease_id"), j.at("deployment"), j.at("instance_id"), j.at("expires_unix_ms"),
           j.at("ttl_seconds")};
    } else {
      std::string info;
      if (!absl::Base64Unescape(j.at("info").get<std::string>(), &info)) return bad();
      r = {j.at("worker_id"), j.at("address"), std::move(info), j.at("last_heartbeat_unix_ms")};
    }
    return r;
  } catch (const json::exception&) {
    return bad();
  }
}

void AddPut(etcdserverpb::TxnRequest* txn, const std::string& key, const json& value) {
  etcdserverpb::PutRequest* put = txn->add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value.dump());
}

void AddDelete(etcdserverpb::TxnRequest* txn, const std::string& key, bool prefix) {
  etcdserverpb::DeleteRangeRequest* del = txn->add_success()->mutable_request_delete_range();
  del->set_key(key);
  if (prefix) del->set_range_end(PrefixEnd(key));
}

}  // namespace

std::string EscapeKeyComponent(const std::string& name) {
  std::string out;
  for (unsigned char c : name) {
    if (c == '/' || c == '%' || c < 0x20 || c == 0x7f) {
      out += fmt::format("%{:02X}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

EtcdStateStore::EtcdStateStore(EtcdSpec spec)
    : client_(std::move(spec.endpoints)), prefix_(std::move(spec.prefix)) {}

absl::StatusOr<std::unique_ptr<EtcdStateStore>> EtcdStateStore::Open(const std::string& spec) {
  ASSIGN_OR_RETURN(EtcdSpec parsed, ParseEtcdSpec(spec));
  std::unique_ptr<EtcdStateStore> store(new EtcdStateStore(std::move(parsed)));
  RETURN_IF_ERROR(store->Load().status());  // reachable, readable, index built
  return store;
}

std::string EtcdStateStore::DeploymentKey(const std::string& name) const {
  return prefix_ + "/deployments/" + EscapeKeyComponent(name);
}
std::string EtcdStateStore::InstanceKey(const std::string& deployment, const std::string& id) const {
  return prefix_ + "/instances/" + EscapeKeyComponent(deployment) + "/" + EscapeKeyComponent(id);
}
std::string EtcdStateStore::LeaseKey(const LeaseAt& at, const std::string& id) const {
  return prefix_ + "/leases/" + EscapeKeyComponent(at.deployment) + "/" +
         EscapeKeyComponent(at.instance) + "/" + EscapeKeyComponent(id);
}
std::string EtcdStateStore::WorkerKey(const std::string& id) const {
  return prefix_ + "/workers/" + EscapeKeyComponent(id);
}

void EtcdStateStore::SetFence(std::string key, int64_t create_revision) {
  absl::MutexLock lock(&mu_);
  fence_ = std::make_pair(std::move(key), create_revision);
}

void EtcdStateStore::ClearFence() {
  absl::MutexLock lock(&mu_);
  fence_.reset();
}

void EtcdStateStore::AddWrite(const StateWrite& write, etcdserverpb::TxnRequest* txn,
                                      std::map<std::string, std::string>* instances,
                                      std::map<std::string, LeaseAt>* leases) const {
  std::visit(
      [&](const auto& w) {
        using W = std::decay_t<decltype(w)>;
        if constexpr (std::is_same_v<W, DeploymentRecord>) {
          AddPut(txn, DeploymentKey(w.name), ToJson(w));
        } else if constexpr (std::is_same_v<W, DeploymentDeletion>) {
          AddDelete(txn, DeploymentKey(w.name), false);
          AddDelete(txn, prefix_ + "/instances/" + EscapeKeyComponent(w.name) + "/", true);
          AddDelete(txn, prefix_ + "/leases/" + EscapeKeyComponent(w.name) + "/", true);
          std::erase_if(*instances, [&](const auto& e) { return e.second == w.name; });
          std::erase_if(*leases, [&](const auto& e) { return e.second.deployment == w.name; });
        } else if constexpr (std::is_same_v<W, InstanceRecord>) {
          auto it = instances->find(w.instance_id);
          if (it != instances->end() && it->second != w.deployment) {
            AddDelete(txn, InstanceKey(it->second, w.instance_id), false);
          }
          AddPut(txn, InstanceKey(w.deployment, w.instance_id), ToJson(w));
          (*instances)[w.instance_id] = w.deployment;
        } else if constexpr (std::is_same_v<W, InstanceDeletion>) {
          // Its leases may name a deployment the instance record does not (or there may be
          // no instance record): delete under every deployment the index puts it in.
          std::set<std::string> deployments;
          if (auto it = instances->find(w.instance_id); it != instances->end()) {
            deployments.insert(it->second);
          }
          for (const auto& [id, at] : *leases) {
            if (at.instance == w.instance_id) deployments.insert(at.deployment);
          }
          for (const std::string& d : deployments) {
            AddDelete(txn, InstanceKey(d, w.instance_id), false);
            AddDelete(txn, LeaseKey({d, w.instance_id}, ""), true);  // its leases
          }
          instances->erase(w.instance_id);
          std::erase_if(*leases, [&](const auto& e) { return e.second.instance == w.instance_id; });
        } else if constexpr (std::is_same_v<W, LeaseRecord>) {
          LeaseAt at{w.deployment, w.instance_id};
          auto it = leases->find(w.lease_id);
          if (it != leases->end() &&
              (it->second.deployment != at.deployment || it->second.instance != at.instance)) {
            AddDelete(txn, LeaseKey(it->second, w.lease_id), false);
          }
          AddPut(txn, LeaseKey(at, w.lease_id), ToJson(w));
          (*leases)[w.lease_id] = at;
        } else if constexpr (std::is_same_v<W, LeaseDeletion>) {
          if (auto it = leases->find(w.lease_id); it != leases->end()) {
            AddDelete(txn, LeaseKey(it->second, w.lease_id), false);
            leases->erase(it);
          }
        } else if constexpr (std::is_same_v<W, WorkerRecord>) {
          AddPut(txn, WorkerKey(w.worker_id), ToJson(w));
        } else {
          static_assert(std::is_same_v<W, WorkerDeletion>);
          AddDelete(txn, WorkerKey(w.worker_id), false);
        }
      },
      write);
}

std::vector<absl::Status> EtcdStateStore::Commit(const std::vector<StateBatch>& batches) {
  std::vector<absl::Status> results;
  absl::MutexLock lock(&mu_);
  for (const StateBatch& batch : batches) {
    etcdserverpb::TxnRequest txn;
    if (fence_) {
      etcdserverpb::Compare* c = txn.add_compare();
      c->set_key(fence_->first);
      c->set_target(etcdserverpb::Compare::CREATE);
      c->set_result(etcdserverpb::Compare::EQUAL);
      c->set_create_revision(fence_->second);
    }
    std::map<std::string, std::string> instances = instance_deployment_;
    std::map<std::string, LeaseAt> leases = lease_at_;
    for (const StateWrite& w : batch) AddWrite(w, &txn, &instances, &leases);
    if (txn.success_size() > kEtcdMaxTxnOps) {
      results.push_back(absl::InternalError(fmt::format(
          "state batch of {} etcd operations exceeds etcd's {} per transaction",
          txn.success_size(), kEtcdMaxTxnOps)));
      continue;
    }
    if (txn.ByteSizeLong() > kEtcdMaxRequestBytes - 4096) {
      results.push_back(absl::InternalError(fmt::format(
          "state batch of {} bytes exceeds etcd's request limit of {} bytes", txn.ByteSizeLong(),
          kEtcdMaxRequestBytes)));
      continue;
    }
    absl::StatusOr<etcdserverpb::TxnResponse> r = client_.Txn(txn);
    if (!r.ok()) {
      // etcd's errors for a request it refuses outright (too large, too many ops) are
      // INVALID_ARGUMENT; to a caller of the store every failure is the store's.
      absl::StatusCode code = absl::IsUnavailable(r.status()) || absl::IsDeadlineExceeded(r.status())
                                  ? absl::StatusCode::kUnavailable
                                  : absl::StatusCode::kInternal;
      results.push_back(absl::Status(code, r.status().message()));
      continue;
    }
    if (!r->succeeded()) {
      results.push_back(absl::UnavailableError(fmt::format(
          "this controller is no longer the leader: etcd refused the write ({} changed)",
          fence_ ? fence_->first : "the fence")));
      continue;
    }
    instance_deployment_ = std::move(instances);
    lease_at_ = std::move(leases);
    results.push_back(absl::OkStatus());
  }
  return results;
}

absl::StatusOr<std::vector<mvccpb::KeyValue>> EtcdStateStore::RangePrefix(const std::string& prefix) {
  std::vector<mvccpb::KeyValue> out;
  etcdserverpb::RangeRequest request;
  request.set_key(prefix);
  request.set_range_end(PrefixEnd(prefix));
  request.set_limit(kRangePage);
  int64_t revision = 0;  // every page from the revision of the first: one consistent view
  while (true) {
    if (revision > 0) request.set_revision(revision);
    ASSIGN_OR_RETURN(etcdserverpb::RangeResponse r, client_.Range(request));
    if (revision == 0) revision = r.header().revision();
    for (mvccpb::KeyValue& kv : *r.mutable_kvs()) out.push_back(std::move(kv));
    if (!r.more() || out.empty()) break;
    request.set_key(out.back().key() + std::string(1, '\0'));
  }
  return out;
}

template <typename Record>
absl::Status EtcdStateStore::ReadAll(const std::string& prefix, std::vector<Record>* out) {
  ASSIGN_OR_RETURN(std::vector<mvccpb::KeyValue> kvs, RangePrefix(prefix));
  for (const mvccpb::KeyValue& kv : kvs) {
    ASSIGN_OR_RETURN(Record r, FromJson<Record>(kv));
    out->push_back(std::move(r));
  }
  return absl::OkStatus();
}

absl::StatusOr<StateSnapshot> EtcdStateStore::Load() {
  absl::MutexLock lock(&mu_);
  StateSnapshot s;
  RETURN_IF_ERROR(ReadAll(prefix_ + "/deployments/", &s.deployments));
  RETURN_IF_ERROR(ReadAll(prefix_ + "/instances/", &s.instances));
  RETURN_IF_ERROR(ReadAll(prefix_ + "/leases/", &s.leases));
  RETURN_IF_ERROR(ReadAll(prefix_ + "/workers/", &s.workers));
  auto by = [](auto field) { return [field](const auto& a, const auto& b) { return a.*field < b.*field; }; };
  std::sort(s.deployments.begin(), s.deployments.end(), by(&DeploymentRecord::name));
  std::sort(s.instances.begin(), s.instances.end(), by(&InstanceRecord::instance_id));
  std::sort(s.leases.begin(), s.leases.end(), by(&LeaseRecord::lease_id));
  std::sort(s.workers.begin(), s.workers.end(), by(&WorkerRecord::worker_id));
  instance_deployment_.clear();
  for (const InstanceRecord& i : s.instances) instance_deployment_[i.instance_id] = i.deployment;
  lease_at_.clear();
  for (const LeaseRecord& l : s.leases) lease_at_[l.lease_id] = {l.deployment, l.instance_id};
  return s;
}

}  // namespace loadstar::daemon
