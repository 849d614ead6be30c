#include "tests/fuzz/rpc_harness.h"

#include <cstdio>
#include <cstdlib>

#include <google/protobuf/message.h>
#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>
#include <grpcpp/generic/generic_stub.h>

#include "daemon/rpc_util.h"

namespace loadstar::fuzz {

namespace pb = google::protobuf;

namespace {

std::string MethodPath(const pb::MethodDescriptor& method) {
  return "/" + method.service()->full_name() + "/" + method.name();
}

std::unique_ptr<pb::Message> NewMessage(const pb::Descriptor* type) {
  return std::unique_ptr<pb::Message>(
      pb::MessageFactory::generated_factory()->GetPrototype(type)->New());
}

bool EndsWithId(const std::string& name) {
  return name.size() > 3 && name.compare(name.size() - 3, 3, "_id") == 0;
}

// Every completion-queue operation here is started and then waited for at once, so the
// tag only needs to be non-null.
bool Wait(grpc::CompletionQueue& cq) {
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok)) return false;
  return ok;
}

}  // namespace

const pb::ServiceDescriptor& ServiceNamed(const std::string& full_name) {
  const pb::ServiceDescriptor* s = pb::DescriptorPool::generated_pool()->FindServiceByName(full_name);
  if (s == nullptr) {
    std::fprintf(stderr, "no service %s in the generated descriptor pool\n", full_name.c_str());
    std::abort();
  }
  return *s;
}

std::vector<RpcStep> ParseSteps(const pb::ServiceDescriptor& service, const uint8_t* data,
                                size_t size) {
  std::vector<RpcStep> steps;
  size_t at = 0;
  while (at + 4 <= size && steps.size() < kMaxSteps) {
    RpcStep step;
    step.method = service.method(data[at] % service.method_count());
    step.flags = data[at + 1];
    const size_t len = data[at + 2] | (static_cast<size_t>(data[at + 3]) << 8);
    at += 4;
    const size_t take = std::min(len, size - at);
    step.request.assign(reinterpret_cast<const char*>(data + at), take);
    at += take;
    steps.push_back(std::move(step));
  }
  return steps;
}

std::string EncodeStep(const pb::ServiceDescriptor& service, const std::string& method,
                       const pb::Message& request, uint8_t flags) {
  const pb::MethodDescriptor* m = service.FindMethodByName(method);
  if (m == nullptr || m->input_type() != request.GetDescriptor()) {
    std::fprintf(stderr, "EncodeStep: no method %s taking %s\n", method.c_str(),
                 request.GetDescriptor()->full_name().c_str());
    std::abort();
  }
  const std::string bytes = request.SerializeAsString();
  if (bytes.size() > 0xffff) std::abort();  // seeds are small by design
  std::string out;
  out.push_back(static_cast<char>(m->index()));
  out.push_back(static_cast<char>(flags));
  out.push_back(static_cast<char>(bytes.size() & 0xff));
  out.push_back(static_cast<char>(bytes.size() >> 8));
  return out + bytes;
}

InProcessServer::InProcessServer(grpc::Service* service) {
  grpc::ServerBuilder builder;
  builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(daemon::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(daemon::kMaxMessageBytes);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) {
    std::fprintf(stderr, "InProcessServer: BuildAndStart failed\n");
    std::abort();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(daemon::kMaxMessageBytes);
  args.SetMaxSendMessageSize(daemon::kMaxMessageBytes);
  channel_ = server_->InProcessChannel(args);
}

InProcessServer::~InProcessServer() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
}

RpcResult CallRaw(const std::shared_ptr<grpc::Channel>& channel,
                  const pb::MethodDescriptor& method, const std::string& request,
                  std::chrono::milliseconds deadline) {
  RpcResult result;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  grpc::CompletionQueue cq;
  grpc::GenericStub stub(channel);
  // A generic call is a stream both ways: one request message, then read every response
  // (one for a unary method), which serves every kind of RPC alike.
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&ctx, MethodPath(method), &cq);
  int tag = 0;
  call->StartCall(&tag);
  bool ok = Wait(cq);
  if (ok) {
    grpc::Slice slice(request);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, &tag);
    ok = Wait(cq);
  }
  if (ok) {
    call->WritesDone(&tag);
    ok = Wait(cq);
  }
  while (ok) {
    grpc::ByteBuffer buffer;
    call->Read(&buffer, &tag);
    if (!Wait(cq)) break;
    std::vector<grpc::Slice> slices;
    std::string message;
    if (buffer.Dump(&slices).ok()) {
      for (const grpc::Slice& s : slices) message.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    result.responses.push_back(std::move(message));
    if (result.responses.size() >= kMaxResponses) {
      ctx.TryCancel();
      break;
    }
  }
  call->Finish(&result.status, &tag);
  Wait(cq);
  cq.Shutdown();
  void* ignored_tag;
  bool ignored_ok;
  while (cq.Next(&ignored_tag, &ignored_ok)) {
  }
  return result;
}

void CheckEveryMethodServed(const std::shared_ptr<grpc::Channel>& channel,
                            const pb::ServiceDescriptor& service,
                            std::chrono::milliseconds deadline) {
  for (int i = 0; i < service.method_count(); ++i) {
    const pb::MethodDescriptor& method = *service.method(i);
    RpcResult r = CallRaw(channel, method, "", deadline);
    if (r.status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      std::fprintf(stderr, "%s has no handler (UNIMPLEMENTED: %s)\n", MethodPath(method).c_str(),
                   r.status.error_message().c_str());
      std::abort();
    }
  }
}

void RunSteps(const std::shared_ptr<grpc::Channel>& channel, const std::vector<RpcStep>& steps,
              std::chrono::milliseconds deadline) {
  static const bool trace = std::getenv("LOADSTAR_FUZZ_TRACE") != nullptr;
  IdCarrier ids;
  for (const RpcStep& step : steps) {
    RpcResult r = CallRaw(channel, *step.method, ids.Apply(step), deadline);
    if (trace) {
      std::fprintf(stderr, "%s: %d %s (%zu responses)\n", step.method->name().c_str(),
                   static_cast<int>(r.status.error_code()), r.status.error_message().c_str(),
                   r.responses.size());
    }
    ids.Remember(*step.method, r);
  }
}

void QuietLogs() {
  if (std::getenv("LOADSTAR_FUZZ_TRACE") != nullptr) return;  // tracing wants the logs too
  spdlog::set_level(spdlog::level::off);
  pb::SetLogHandler([](pb::LogLevel, const char*, int, const std::string&) {});
}

void IdCarrier::Remember(const pb::MethodDescriptor& method, const RpcResult& result) {
  for (const std::string& bytes : result.responses) {
    std::unique_ptr<pb::Message> response = NewMessage(method.output_type());
    if (response->ParseFromString(bytes)) Walk(*response, 0);
  }
}

void IdCarrier::Walk(const pb::Message& message, int depth) {
  if (depth > 4) return;  // ids sit near the top (Lease.instance.instance_id)
  const pb::Reflection* reflection = message.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const pb::FieldDescriptor* f : fields) {
    if (f->type() == pb::FieldDescriptor::TYPE_STRING && !f->is_repeated() &&
        EndsWithId(f->name())) {
      last_[f->name()] = reflection->GetString(message, f);
    } else if (f->type() == pb::FieldDescriptor::TYPE_MESSAGE) {
      if (f->is_repeated()) {
        const int n = reflection->FieldSize(message, f);
        if (n > 0) Walk(reflection->GetRepeatedMessage(message, f, n - 1), depth + 1);
      } else {
        Walk(reflection->GetMessage(message, f), depth + 1);
      }
    }
  }
}

std::string IdCarrier::Apply(const RpcStep& step) const {
  if (!(step.flags & kCarryIds)) return step.request;
  std::unique_ptr<pb::Message> ids = NewMessage(step.method->input_type());
  const pb::Descriptor* type = step.method->input_type();
  for (int i = 0; i < type->field_count(); ++i) {
    const pb::FieldDescriptor* f = type->field(i);
    auto it = last_.find(f->name());
    if (it == last_.end() || f->type() != pb::FieldDescriptor::TYPE_STRING || f->is_repeated()) {
      continue;
    }
    ids->GetReflection()->SetString(ids.get(), f, it->second);
  }
  return step.request + ids->SerializeAsString();
}

}  // namespace loadstar::fuzz
