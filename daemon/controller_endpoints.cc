#include "daemon/controller_endpoints.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace loadstar::daemon {

absl::StatusOr<std::vector<std::string>> SplitAddresses(const std::string& addresses) {
  std::vector<std::string> out;
  for (absl::string_view a : absl::StrSplit(addresses, ',')) {
    std::string address(absl::StripAsciiWhitespace(a));
    if (!address.empty()) out.push_back(std::move(address));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' names no controller address (HOST:PORT[,HOST:PORT...])", addresses));
  }
  return out;
}

ControllerEndpoints::ControllerEndpoints(std::vector<std::string> addresses,
                                         ClientSecurity security)
    : addresses_(std::move(addresses)), security_(std::move(security)) {}

std::shared_ptr<grpc::Channel> ControllerEndpoints::channel() {
  Endpoint& e = endpoints_[current()];
  if (e.channel == nullptr) e.channel = MakeChannel(current(), security_.credentials);
  return e.channel;
}

loadstar::v1::Controller::Stub* ControllerEndpoints::stub() {
  Endpoint& e = endpoints_[current()];
  if (e.stub == nullptr) e.stub = loadstar::v1::Controller::NewStub(channel());
  return e.stub.get();
}

bool ControllerEndpoints::Follow(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
      status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    return false;
  }
  std::string leader = LeaderNamedBy(status);
  if (!leader.empty() && leader != current()) {
    auto it = std::find(addresses_.begin(), addresses_.end(), leader);
    if (it == addresses_.end()) it = addresses_.insert(addresses_.end(), leader);
    current_ = static_cast<size_t>(it - addresses_.begin());
    return true;
  }
  if (addresses_.size() < 2) return false;
  current_ = (current_ + 1) % addresses_.size();
  return true;
}

absl::StatusOr<std::string> ControllerEndpoints::FindLeader() {
  grpc::Status last;
  // Each address once, plus the redirects they give.
  for (size_t attempt = 0; attempt < 2 * addresses_.size() + 1; ++attempt) {
    grpc::ClientContext ctx;
    security_.auth.Apply(&ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    loadstar::v1::ListWorkersResponse response;
    last = stub()->ListWorkers(&ctx, {}, &response);
    if (last.ok() || (last.error_code() != grpc::StatusCode::UNAVAILABLE &&
                      last.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED)) {
      return current();  // it answered (an auth error is still its answer)
    }
    if (!Follow(last)) break;
  }
  return absl::UnavailableError(FromGrpc(last).message());
}

absl::StatusOr<ControllerConnection> ConnectToController(std::vector<std::string> addresses,
                                                         ClientSecurity security) {
  // One address: nothing to choose, so no probe; the caller's first call (with its own
  // deadline) reports an unreachable controller.
  if (addresses.size() == 1) {
    std::shared_ptr<grpc::Channel> channel = MakeChannel(addresses[0], security.credentials);
    return ControllerConnection{std::move(addresses[0]), std::move(channel)};
  }
  ControllerEndpoints endpoints(std::move(addresses), std::move(security));
  ASSIGN_OR_RETURN(std::string leader, endpoints.FindLeader());
  return ControllerConnection{std::move(leader), endpoints.channel()};
}

}  // namespace loadstar::daemon
