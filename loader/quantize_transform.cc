#include "loader/quantize_transform.h"

#include <fmt/format.h>

#include <cstring>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/status_macros.h"
#include "loader/device_backends.h"
#include "quant/quant_state.h"
#include "quant/streaming.h"

namespace loadstar::loader {

namespace {

constexpr uint64_t kPartAlignment = 256;
// Longest Python repr of a float32 value ("-1.2345678901234567e-38"), padded.
constexpr int64_t kMaxFloatReprChars = 32;

uint64_t AlignUp(uint64_t v) { return (v + kPartAlignment - 1) / kPartAlignment * kPartAlignment; }

bool IsFloatingDType(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string StateKey(quant::QuantType type) {
  return fmt::format("quant_state.bitsandbytes__{}", quant::QuantTypeName(type));
}

// The planned parts of a quantized weight (quant_state at its maximal length).
std::vector<QuantizeTransformProvider::Part> PlanParts(const quant::QuantConfig& config,
                                                       quant::QuantType type,
                                                       const std::string& w,
                                                       const std::vector<int64_t>& shape) {
  using Part = QuantizeTransformProvider::Part;
  std::vector<Part> parts;
  const int64_t n = Elements(shape);
  if (type == quant::QuantType::kInt8) {
    std::string module = w.ends_with(".weight") ? w.substr(0, w.size() - 7) : w;
    parts.push_back({w, DType::kI8, shape});
    parts.push_back({module + ".SCB", DType::kF32, {shape[0]}});
    parts.push_back({w + "_format", DType::kU8, {}});
  } else {
    const int64_t blocks = (n + config.blocksize - 1) / config.blocksize;
    parts.push_back({w, DType::kU8, {(n + 1) / 2, 1}});
    parts.push_back({w + ".absmax", config.double_quant ? DType::kU8 : DType::kF32, {blocks}});
    parts.push_back({w + ".quant_map", DType::kF32, {16}});
    if (config.double_quant) {
      parts.push_back({w + ".nested_absmax", DType::kF32, {(blocks + 255) / 256}});
      parts.push_back({w + ".nested_quant_map", DType::kF32, {256}});
    }
    quant::Quantized4bit q;
    q.spec = config.fp4_spec();
    q.dtype = config.torch_dtype;
    q.shape = shape;
    int64_t json = static_cast<int64_t>(quant::QuantStateJson(q).size());
    if (config.double_quant) json += kMaxFloatReprChars;
    parts.push_back({w + "." + StateKey(type), DType::kU8, {json}});
  }
  uint64_t offset = 0;
  for (Part& p : parts) {
    offset = AlignUp(offset);
    p.offset = offset;
    p.size = static_cast<uint64_t>(Elements(p.shape)) * DTypeSize(p.dtype);
    offset += p.size;
  }
  return parts;
}

}  // namespace

// Casts a floating tensor to torch_dtype as its chunks arrive.
class CastTransform : public TensorTransform {
 public:
  CastTransform(DType from, DType to) : from_(from), to_(to) {}
  absl::Status Consume(const char* data, uint64_t bytes, OutputWriter& out) override {
    const int64_t n = static_cast<int64_t>(bytes / DTypeSize(from_));
    buffer_.resize(static_cast<size_t>(n) * DTypeSize(to_));
    RETURN_IF_ERROR(quant::CastFloatTensor(from_, data, n, to_, buffer_.data()));
    RETURN_IF_ERROR(out.Write(written_, buffer_.data(), buffer_.size()));
    written_ += buffer_.size();
    return absl::OkStatus();
  }
  absl::Status Finish(OutputWriter&) override { return absl::OkStatus(); }

 private:
  DType from_, to_;
  uint64_t written_ = 0;
  std::vector<char> buffer_;
};

class QuantizeTensorTransform : public TensorTransform {
 public:
  QuantizeTensorTransform(QuantizeTransformProvider* provider, std::string name, int shard,
                          quant::QuantType type, std::vector<QuantizeTransformProvider::Part> parts,
                          quant::StreamingQuantizer::Options options)
      : provider_(provider), name_(std::move(name)), shard_(shard), type_(type),
        parts_(std::move(parts)), options_(std::move(options)) {}

  absl::Status Consume(const char* data, uint64_t bytes, OutputWriter& out) override {
    RETURN_IF_ERROR(StartQuantizer(out));
    return quantizer_->Append(data, bytes);
  }

  absl::Status Finish(OutputWriter& out) override {
    RETURN_IF_ERROR(StartQuantizer(out));
    std::vector<quant::NamedTensor> tensors;
    if (type_ == quant::QuantType::kInt8) {
      ASSIGN_OR_RETURN(quant::QuantizedInt8 q, quantizer_->FinishInt8());
      tensors = quant::SerializeInt8(name_, q);
    } else {
      ASSIGN_OR_RETURN(quant::Quantized4bit q, quantizer_->Finish4bit());
      // Serialize4bit copies every part; the packed weight, nearly all of the bytes, is
      // moved in instead (a copy into fresh memory per tensor cost ~10% of a
      // quantize-while-loading run's CPU; perf, docs/performance.md "Deploy nf4").
      std::vector<uint8_t> packed = std::move(q.packed);
      q.packed = {};
      tensors = quant::Serialize4bit(name_, q);
      tensors[0].shape = {static_cast<int64_t>(packed.size()), 1};
      tensors[0].data = std::move(packed);
    }
    if (tensors.size() != parts_.size()) {
      return absl::InternalError(fmt::format("{}: quantization gave {} tensors, planned {}",
                                             name_, tensors.size(), parts_.size()));
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      QuantizeTransformProvider::Part& p = parts_[i];
      const quant::NamedTensor& t = tensors[i];
      // Only the quant_state JSON may come out shorter than planned.
      if (t.name != p.name || t.dtype != p.dtype || t.data.size() > p.size ||
          (t.data.size() != p.size && !p.name.ends_with(StateKey(type_)))) {
        return absl::InternalError(fmt::format(
            "{}: quantized part {} ({} bytes) does not match the plan ({}, {} bytes)", name_,
            t.name, t.data.size(), p.name, p.size));
      }
      p.shape = t.shape;
      p.size = t.data.size();
      if (p.size) RETURN_IF_ERROR(out.Write(p.offset, t.data.data(), p.size));
    }
    provider_->Record(name_, shard_, std::move(parts_));
    return absl::OkStatus();
  }

 private:
  // The quantizer is picked when the first bytes arrive, as only the OutputWriter knows
  // the destination device: its backend's (on the device) when it has one for this
  // tensor, else the CPU's. Both give the same bits (quant/tensor_quantizer.h).
  absl::Status StartQuantizer(OutputWriter& out) {
    if (quantizer_ != nullptr) return absl::OkStatus();
    if (Device* device = out.device()) {
      if (DeviceBackend* backend = BackendOf(*device)) {
        ASSIGN_OR_RETURN(quantizer_, backend->CreateQuantizer(*device, options_));
        if (quantizer_ != nullptr) {
          provider_->device_quantized_.fetch_add(1, std::memory_order_relaxed);
          return absl::OkStatus();
        }
      }
    }
    ASSIGN_OR_RETURN(quantizer_, quant::StreamingQuantizer::Create(options_));
    return absl::OkStatus();
  }

  QuantizeTransformProvider* provider_;
  std::string name_;
  int shard_;
  quant::QuantType type_;
  std::vector<QuantizeTransformProvider::Part> parts_;
  const quant::StreamingQuantizer::Options options_;
  std::unique_ptr<quant::TensorQuantizer> quantizer_;
};

namespace {

// What happens to `tensor`: kNone with cast, a quant type, or nothing.
quant::QuantType TypeFor(const quant::QuantConfig& config, const store::ManifestTensor& t) {
  if (!IsFloatingDType(t.dtype)) return quant::QuantType::kNone;
  return quant::ShouldQuantize(config, t.name, t.shape);
}

}  // namespace

std::optional<TransformedTensor> QuantizeTransformProvider::Plan(
    const store::ManifestTensor& tensor) {
  const quant::QuantConfig& config = options_.config;
  quant::QuantType type = TypeFor(config, tensor);
  if (type == quant::QuantType::kNone) {
    if (!IsFloatingDType(tensor.dtype) || tensor.dtype == config.torch_dtype) return std::nullopt;
    TransformedTensor out;
    out.dtype = config.torch_dtype;
    out.shape = tensor.shape;
    out.size = static_cast<uint64_t>(Elements(tensor.shape)) * DTypeSize(config.torch_dtype);
    return out;
  }
  std::vector<int64_t> shape = tensor.shape;
  if (quant::IsConv1DWeight(options_.model_type, tensor.name, tensor.shape)) {
    shape = {tensor.shape[1], tensor.shape[0]};
  }
  std::vector<Part> parts = PlanParts(config, type, tensor.name, shape);
  TransformedTensor out;
  out.dtype = DType::kU8;
  out.size = parts.back().offset + parts.back().size;
  out.shape = {static_cast<int64_t>(out.size)};
  out.info = nlohmann::json({{"quant_type", std::string(quant::QuantTypeName(type))},
                             {"region", true}})
                 .dump();
  return out;
}

absl::StatusOr<std::unique_ptr<TensorTransform>> QuantizeTransformProvider::Begin(
    const store::ManifestTensor& tensor, const TransformedTensor& output) {
  return BeginShard(tensor, output, 0);
}

absl::StatusOr<std::unique_ptr<TensorTransform>> QuantizeTransformProvider::BeginShard(
    const store::ManifestTensor& tensor, const TransformedTensor& output, int shard) {
  const quant::QuantConfig& config = options_.config;
  quant::QuantType type = TypeFor(config, tensor);
  if (type == quant::QuantType::kNone) {
    return std::unique_ptr<TensorTransform>(new CastTransform(tensor.dtype, config.torch_dtype));
  }
  quant::StreamingQuantizer::Options q;
  q.type = type;
  if (type != quant::QuantType::kInt8) q.spec = config.fp4_spec();
  q.in_dtype = tensor.dtype;
  q.quantize_dtype = config.torch_dtype;
  q.shape = tensor.shape;
  q.threads.threads = options_.quantize_threads;
  q.transpose_conv1d = quant::IsConv1DWeight(options_.model_type, tensor.name, tensor.shape);
  std::vector<int64_t> shape = tensor.shape;
  if (quant::IsConv1DWeight(options_.model_type, tensor.name, tensor.shape)) {
    shape = {tensor.shape[1], tensor.shape[0]};
  }
  std::vector<Part> parts = PlanParts(config, type, tensor.name, shape);
  if (parts.back().offset + parts.back().size != output.size) {
    return absl::InternalError(fmt::format("{}: planned region size changed", tensor.name));
  }
  return std::unique_ptr<TensorTransform>(new QuantizeTensorTransform(
      this, tensor.name, shard, type, std::move(parts), std::move(q)));
}

void QuantizeTransformProvider::Record(const std::string& name, int shard,
                                       std::vector<Part> parts) {
  std::lock_guard<std::mutex> lock(mu_);
  done_[{name, shard}] = std::move(parts);
}

absl::Status QuantizeTransformProvider::ExpandTensors(LoadedModel& model) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LoadedTensor> out;
  for (const LoadedTensor& t : model.tensors()) {
    auto it = done_.find({t.name, t.num_shards > 1 ? t.shard : 0});
    if (it == done_.end() || t.dtype != DType::kU8 || t.transform_info.empty()) {
      out.push_back(t);
      continue;
    }
    for (const Part& p : it->second) {
      LoadedTensor e = t;
      e.name = p.name;
      e.dtype = p.dtype;
      e.shape = p.shape;
      e.offset = t.offset + p.offset;
      e.size = p.size;
      e.transform_info.clear();
      out.push_back(std::move(e));
    }
  }
  model.mutable_tensors() = std::move(out);
  AnnotateQuantState(model);
  return absl::OkStatus();
}

void AnnotateQuantState(LoadedModel& model) {
  // Keyed by (name, device): tensor-parallel shards share names, one per device.
  using Key = std::pair<std::string, int>;
  std::map<Key, const LoadedTensor*> by_name;
  for (const LoadedTensor& t : model.tensors()) by_name.emplace(Key{t.name, t.device}, &t);
  std::map<Key, std::string> info;  // (weight name, device) -> JSON
  int device = 0;                   // of the tensor being annotated
  auto offset_of = [&](const std::string& name) -> int64_t {
    auto it = by_name.find(Key{name, device});
    return it == by_name.end() ? -1 : static_cast<int64_t>(it->second->offset);
  };
  for (const LoadedTensor& t : model.tensors()) {
    device = t.device;
    for (quant::QuantType type : {quant::QuantType::kNf4, quant::QuantType::kFp4}) {
      const std::string suffix = "." + StateKey(type);
      if (!t.name.ends_with(suffix)) continue;
      const std::string w = t.name.substr(0, t.name.size() - suffix.size());
      std::string text = model.ReadTensor(t).value_or("");
      nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object()) continue;
      j["absmax_offset"] = offset_of(w + ".absmax");
      j["quant_map_offset"] = offset_of(w + ".quant_map");
      if (j.contains("nested_blocksize")) {
        j["nested_absmax_offset"] = offset_of(w + ".nested_absmax");
        j["nested_quant_map_offset"] = offset_of(w + ".nested_quant_map");
      }
      info[Key{w, t.device}] = j.dump();
    }
    if (t.name.ends_with(".SCB")) {
      const std::string w = t.name.substr(0, t.name.size() - 4) + ".weight";
      auto weight = by_name.find(Key{w, t.device});
      if (weight != by_name.end() && weight->second->dtype == DType::kI8) {
        info[Key{w, t.device}] = nlohmann::json({{"quant_type", "int8"},
                                  {"shape", weight->second->shape},
                                  {"scb_offset", static_cast<int64_t>(t.offset)}})
                      .dump();
      }
    }
  }
  for (LoadedTensor& t : model.mutable_tensors()) {
    auto it = info.find(Key{t.name, t.device});
    if (it != info.end()) t.transform_info = it->second;
  }
}

}  // namespace loadstar::loader
