// A small client of etcd's v3 gRPC API (proto/etcd/): KV (Range, Txn), Lease (grant,
// revoke, keep-alive). One channel per endpoint; a call that finds its endpoint
// unavailable moves on to the next, so any live member of the cluster serves it.
//
// Thread safety: every method may be called concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"

namespace loadstar::daemon {

// etcd's defaults (server flags --max-txn-ops, --max-request-bytes): loadstar keeps each
// request inside them rather than assuming a cluster tuned otherwise.
inline constexpr int kEtcdMaxTxnOps = 128;
inline constexpr size_t kEtcdMaxRequestBytes = 1536 * 1024;

// "etcd://h1:2379,h2:2379/prefix" -> endpoints and prefix ("/prefix", no trailing slash).
struct EtcdSpec {
  std::vector<std::string> endpoints;
  std::string prefix;
};
absl::StatusOr<EtcdSpec> ParseEtcdSpec(const std::string& spec);

class EtcdClient {
 public:
  explicit EtcdClient(std::vector<std::string> endpoints,
                      std::chrono::milliseconds timeout = std::chrono::seconds(5));

  absl::StatusOr<etcdserverpb::RangeResponse> Range(const etcdserverpb::RangeRequest& request);
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& request);
  absl::StatusOr<etcdserverpb::PutResponse> Put(const etcdserverpb::PutRequest& request);
  // A lease of `ttl_seconds`; its id.
  absl::StatusOr<int64_t> GrantLease(int64_t ttl_seconds);
  absl::Status RevokeLease(int64_t id);
  // One keep-alive round trip; the lease's remaining TTL (NOT_FOUND once it has expired).
  absl::StatusOr<int64_t> KeepAlive(int64_t id);

  const std::vector<std::string>& endpoints() const { return endpoints_; }

 private:
  struct Member {
    std::string address;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  };
  // Runs `call` on the current member, then on each other one while they answer
  // UNAVAILABLE (or do not answer in time).
  template <typename Call>
  absl::Status OnSomeMember(const char* what, Call call);

  std::vector<std::string> endpoints_;
  std::vector<Member> members_;
  std::chrono::milliseconds timeout_;
  std::atomic<size_t> current_{0};
};

// The end of the range of every key starting with `prefix` (etcd's "prefix" range_end).
std::string PrefixEnd(const std::string& prefix);

}  // namespace loadstar::daemon
