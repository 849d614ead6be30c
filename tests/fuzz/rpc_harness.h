// Drives a gRPC service in-process the way a remote peer would, for the RPC fuzzers
// (controller_rpc_fuzzer, worker_rpc_fuzzer) and their seed writer.
//
// A fuzz input is a list of calls. Each call names a method by its index in the service
// descriptor (so every RPC of the proto is reachable, and a new one is without an edit
// here) and carries its request as raw bytes: the server's own deserializer parses them,
// exactly as for bytes off the network. Calls go through an in-process channel with a
// deadline, so streaming RPCs (WatchDeployment, LoadInstance, ReadTensor, ...) and waiting
// ones (Acquire) always end: the deadline cancels the handler's stream.
//
// Input framing, repeated until the input ends (at most kMaxSteps calls):
//   u8 method index (mod the service's method count), u8 flags, u16 LE length, bytes.
// Flag kCarryIds: before the call, the last value of each string field "*_id" seen in
// earlier responses (lease_id, instance_id, worker_id) is appended for the request's
// field of that name, so a fuzzer can Renew the lease its Acquire got although lease ids
// are random. (Appending a field to protobuf bytes overrides it: the last value wins.)
//
// Thread safety: InProcessServer and IdCarrier are thread-compatible; CallRaw is safe
// from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <grpcpp/grpcpp.h>

namespace loadstar::fuzz {

inline constexpr size_t kMaxSteps = 8;

// The service "loadstar.v1.Controller" from the generated descriptor pool; aborts when the
// binary does not link it.
const google::protobuf::ServiceDescriptor& ServiceNamed(const std::string& full_name);
inline constexpr uint8_t kCarryIds = 1;

struct RpcStep {
  const google::protobuf::MethodDescriptor* method = nullptr;
  uint8_t flags = 0;
  std::string request;  // serialized request message (possibly invalid bytes)
};

std::vector<RpcStep> ParseSteps(const google::protobuf::ServiceDescriptor& service,
                                const uint8_t* data, size_t size);
// One step in the framing above; `method` is looked up by name (seed writer).
std::string EncodeStep(const google::protobuf::ServiceDescriptor& service,
                       const std::string& method, const google::protobuf::Message& request,
                       uint8_t flags = 0);

// A gRPC server with no ports, serving `service` (not owned) with the daemon's message
// size limits; calls come through channel(). Shuts down (short deadline) on destruction.
class InProcessServer {
 public:
  explicit InProcessServer(grpc::Service* service);
  ~InProcessServer();
  InProcessServer(const InProcessServer&) = delete;
  InProcessServer& operator=(const InProcessServer&) = delete;
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

struct RpcResult {
  grpc::Status status;
  std::vector<std::string> responses;  // serialized response messages, in order
};

// Calls `method` with raw `request` bytes and collects the responses; past `deadline` the
// call is cancelled (DEADLINE_EXCEEDED), and after kMaxResponses it is cancelled too.
inline constexpr size_t kMaxResponses = 64;
RpcResult CallRaw(const std::shared_ptr<grpc::Channel>& channel,
                  const google::protobuf::MethodDescriptor& method, const std::string& request,
                  std::chrono::milliseconds deadline);

// Aborts, naming the method, unless the server behind `channel` implements every method
// of `service`: an empty request to each must not come back UNIMPLEMENTED (the default
// of a generated service method that nobody overrode).
void CheckEveryMethodServed(const std::shared_ptr<grpc::Channel>& channel,
                            const google::protobuf::ServiceDescriptor& service,
                            std::chrono::milliseconds deadline);

// Runs `steps` in order on `channel`, each with `deadline`, carrying ids between them
// (kCarryIds). With LOADSTAR_FUZZ_TRACE set, prints each call's method, status and
// response count to stderr (to check that a seed reaches what it means to).
void RunSteps(const std::shared_ptr<grpc::Channel>& channel, const std::vector<RpcStep>& steps,
              std::chrono::milliseconds deadline);

// Silences the daemon's and protobuf's logs (every rejected request would print one).
void QuietLogs();

// The "*_id" values responses carried, for kCarryIds.
class IdCarrier {
 public:
  void Remember(const google::protobuf::MethodDescriptor& method, const RpcResult& result);
  // `step.request` with the remembered ids appended for the request's top-level "*_id"
  // string fields.
  std::string Apply(const RpcStep& step) const;

 private:
  void Walk(const google::protobuf::Message& message, int depth);
  std::map<std::string, std::string> last_;  // field name -> last value seen
};

}  // namespace loadstar::fuzz
