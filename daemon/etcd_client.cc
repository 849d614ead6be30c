#include "daemon/etcd_client.h"

#include <fmt/format.h>

#include "absl/strings/str_split.h"
#include "daemon/rpc_util.h"

namespace loadstar::daemon {

absl::StatusOr<EtcdSpec> ParseEtcdSpec(const std::string& spec) {
  constexpr std::string_view kScheme = "etcd://";
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        fmt::format("state: '{}' is not etcd://HOST:PORT[,HOST:PORT...]/PREFIX: {}", spec, why));
  };
  if (spec.rfind(kScheme, 0) != 0) return bad("no etcd:// scheme");
  std::string rest = spec.substr(kScheme.size());
  size_t slash = rest.find('/');
  if (slash == std::string::npos || slash + 1 >= rest.size()) return bad("no /PREFIX");
  EtcdSpec out;
  out.prefix = rest.substr(slash);
  while (out.prefix.size() > 1 && out.prefix.back() == '/') out.prefix.pop_back();
  for (absl::string_view e : absl::StrSplit(rest.substr(0, slash), ',')) {
    size_t colon = e.rfind(':');
    if (e.empty() || colon == absl::string_view::npos || colon == 0 || colon + 1 == e.size()) {
      return bad(fmt::format("endpoint '{}' is not HOST:PORT", std::string(e)));
    }
    out.endpoints.emplace_back(e);
  }
  return out;
}

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(end.back() + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdClient::EtcdClient(std::vector<std::string> endpoints, std::chrono::milliseconds timeout)
    : endpoints_(std::move(endpoints)), timeout_(timeout) {
  for (const std::string& address : endpoints_) {
    std::shared_ptr<grpc::Channel> channel = MakeChannel(address);
    members_.push_back({address, etcdserverpb::KV::NewStub(channel),
                        etcdserverpb::Lease::NewStub(channel)});
  }
}

template <typename Call>
absl::Status EtcdClient::OnSomeMember(const char* what, Call call) {
  grpc::Status last;
  size_t start = current_.load();
  for (size_t i = 0; i < members_.size(); ++i) {
    size_t index = (start + i) % members_.size();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
    last = call(members_[index], &ctx);
    if (last.ok()) {
      current_.store(index);
      return absl::OkStatus();
    }
    if (last.error_code() != grpc::StatusCode::UNAVAILABLE &&
        last.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      break;  // an answer: another member would give the same one
    }
  }
  absl::Status status = FromGrpc(last);
  return absl::Status(status.code(), fmt::format("etcd {} ({}): {}", what,
                                                 fmt::join(endpoints_, ","),
                                                 std::string(status.message())));
}

absl::StatusOr<etcdserverpb::RangeResponse> EtcdClient::Range(
    const etcdserverpb::RangeRequest& request) {
  etcdserverpb::RangeResponse response;
  absl::Status s = OnSomeMember("range", [&](Member& m, grpc::ClientContext* ctx) {
    return m.kv->Range(ctx, request, &response);
  });
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<etcdserverpb::TxnResponse> EtcdClient::Txn(const etcdserverpb::TxnRequest& request) {
  etcdserverpb::TxnResponse response;
  absl::Status s = OnSomeMember("txn", [&](Member& m, grpc::ClientContext* ctx) {
    return m.kv->Txn(ctx, request, &response);
  });
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<etcdserverpb::PutResponse> EtcdClient::Put(const etcdserverpb::PutRequest& request) {
  etcdserverpb::PutResponse response;
  absl::Status s = OnSomeMember("put", [&](Member& m, grpc::ClientContext* ctx) {
    return m.kv->Put(ctx, request, &response);
  });
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<int64_t> EtcdClient::GrantLease(int64_t ttl_seconds) {
  etcdserverpb::LeaseGrantRequest request;
  request.set_ttl(ttl_seconds);
  etcdserverpb::LeaseGrantResponse response;
  absl::Status s = OnSomeMember("lease grant", [&](Member& m, grpc::ClientContext* ctx) {
    return m.lease->LeaseGrant(ctx, request, &response);
  });
  if (!s.ok()) return s;
  if (!response.error().empty()) {
    return absl::UnavailableError("etcd lease grant: " + response.error());
  }
  return response.id();
}

absl::Status EtcdClient::RevokeLease(int64_t id) {
  etcdserverpb::LeaseRevokeRequest request;
  request.set_id(id);
  etcdserverpb::LeaseRevokeResponse response;
  return OnSomeMember("lease revoke", [&](Member& m, grpc::ClientContext* ctx) {
    return m.lease->LeaseRevoke(ctx, request, &response);
  });
}

absl::StatusOr<int64_t> EtcdClient::KeepAlive(int64_t id) {
  etcdserverpb::LeaseKeepAliveResponse response;
  absl::Status s = OnSomeMember("lease keep-alive", [&](Member& m, grpc::ClientContext* ctx) {
    auto stream = m.lease->LeaseKeepAlive(ctx);
    etcdserverpb::LeaseKeepAliveRequest request;
    request.set_id(id);
    if (!stream->Write(request) || !stream->Read(&response)) {
      stream->WritesDone();
      grpc::Status st = stream->Finish();
      return st.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "keep-alive stream ended") : st;
    }
    stream->WritesDone();
    ctx->TryCancel();  // one round trip per call: the stream is not kept
    stream->Finish().ok();
    return grpc::Status::OK;
  });
  if (!s.ok()) return s;
  if (response.ttl() <= 0) {
    return absl::NotFoundError(fmt::format("etcd lease {:x} has expired", id));
  }
  return response.ttl();
}

}  // namespace loadstar::daemon
