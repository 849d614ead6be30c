#include "loader/bnb_transform.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "base/status_macros.h"
#include "quant/quant_state.h"
#include "store/quantized_artifact.h"

namespace loadstar::loader {
namespace {

constexpr std::string_view kStateKey = ".quant_state.bitsandbytes__";

quant::NamedTensor ToNamed(const store::ManifestTensor& t, const std::string& bytes) {
  return quant::NamedTensor{t.name, t.dtype, t.shape,
                            std::vector<uint8_t>(bytes.begin(), bytes.end())};
}

// Buffers the packed weight; at the end dequantizes it and hands the result on.
class BnbWeightTransform : public TensorTransform {
 public:
  BnbWeightTransform(store::ManifestTensor packed, bool four_bit,
                     std::map<std::string, quant::NamedTensor> companions, DType logical_dtype,
                     std::unique_ptr<TensorTransform> inner, DType out_dtype)
      : packed_(std::move(packed)), four_bit_(four_bit), companions_(std::move(companions)),
        logical_dtype_(logical_dtype), inner_(std::move(inner)), out_dtype_(out_dtype) {
    bytes_.reserve(packed_.size);
  }

  absl::Status Consume(const char* data, uint64_t bytes, OutputWriter&) override {
    bytes_.insert(bytes_.end(), data, data + bytes);
    return absl::OkStatus();
  }

  absl::Status Finish(OutputWriter& out) override {
    companions_[packed_.name] =
        quant::NamedTensor{packed_.name, packed_.dtype, packed_.shape, std::move(bytes_)};
    auto lookup = [&](std::string_view name) -> const quant::NamedTensor* {
      auto it = companions_.find(std::string(name));
      return it == companions_.end() ? nullptr : &it->second;
    };
    std::vector<char> logical;
    int64_t n = 0;
    if (four_bit_) {
      ASSIGN_OR_RETURN(quant::Quantized4bit q, quant::Parse4bit(packed_.name, lookup));
      n = q.num_elements();
      logical.resize(static_cast<size_t>(n) * DTypeSize(q.dtype));
      RETURN_IF_ERROR(quant::Dequantize4bit(q, q.dtype, logical.data(), {.threads = 1}));
    } else {
      ASSIGN_OR_RETURN(quant::QuantizedInt8 q, quant::ParseInt8(packed_.name, lookup));
      n = q.rows() * q.cols();
      logical.resize(static_cast<size_t>(n) * 4);
      RETURN_IF_ERROR(quant::DequantizeInt8(q, DType::kF32, logical.data()));
    }
    companions_.clear();
    if (inner_) {
      RETURN_IF_ERROR(inner_->Consume(logical.data(), logical.size(), out));
      return inner_->Finish(out);
    }
    if (logical_dtype_ == out_dtype_) return out.Write(0, logical.data(), logical.size());
    std::vector<char> cast(static_cast<size_t>(n) * DTypeSize(out_dtype_));
    RETURN_IF_ERROR(quant::CastFloatTensor(logical_dtype_, logical.data(), n, out_dtype_,
                                           cast.data()));
    return out.Write(0, cast.data(), cast.size());
  }

 private:
  store::ManifestTensor packed_;
  bool four_bit_;
  std::map<std::string, quant::NamedTensor> companions_;
  std::vector<uint8_t> bytes_;
  DType logical_dtype_;
  std::unique_ptr<TensorTransform> inner_;
  DType out_dtype_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BnbTransformProvider>> BnbTransformProvider::Create(
    Options options) {
  std::map<std::string, Weight> weights;
  const store::Manifest& m = options.manifest;
  for (const store::ManifestTensor& t : m.tensors) {
    if (t.name.ends_with(".SCB")) {
      const std::string name = t.name.substr(0, t.name.size() - 4) + ".weight";
      const store::ManifestTensor* w = m.Find(name);
      if (w == nullptr || w->shape.size() != 2) {
        return absl::DataLossError(fmt::format(
            "model {}: {} has no 2-D int8 weight {} beside it", m.name, t.name, name));
      }
      weights[name] = Weight{.four_bit = false, .dtype = DType::kF32, .shape = w->shape};
      continue;
    }
    const size_t at = t.name.find(kStateKey);
    if (at == std::string::npos) continue;
    ASSIGN_OR_RETURN(std::string text, store::ReadStoredTensor(*options.store, m, t));
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    std::optional<DType> dtype;
    std::vector<int64_t> shape;
    if (j.is_object() && j.contains("dtype") && j["dtype"].is_string()) {
      dtype = ParseTorchDType(j["dtype"].get<std::string>());
    }
    if (j.is_object() && j.contains("shape") && j["shape"].is_array()) {
      for (const nlohmann::json& d : j["shape"]) {
        if (d.is_number_integer() && d.get<int64_t>() >= 0) shape.push_back(d.get<int64_t>());
      }
    }
    if (!dtype || shape.empty() || shape.size() != j["shape"].size()) {
      return absl::InvalidArgumentError(fmt::format(
          "model {}: {}: not a bitsandbytes quant state (needs \"dtype\" and \"shape\")",
          m.name, t.name));
    }
    weights[t.name.substr(0, at)] = Weight{.four_bit = true, .dtype = *dtype, .shape = shape};
  }
  return std::unique_ptr<BnbTransformProvider>(
      new BnbTransformProvider(std::move(options), std::move(weights)));
}

BnbTransformProvider::BnbTransformProvider(Options options, std::map<std::string, Weight> weights)
    : options_(std::move(options)), weights_(std::move(weights)),
      quantize_(QuantizeTransformProvider::Options{.config = options_.config,
                                                   .model_type = options_.model_type,
                                                   .quantize_threads = 1}) {}

store::ManifestTensor BnbTransformProvider::Logical(const store::ManifestTensor& packed,
                                                    const Weight& w) const {
  store::ManifestTensor t = packed;
  t.dtype = w.dtype;
  t.shape = w.shape;
  uint64_t n = 1;
  for (int64_t d : w.shape) n *= static_cast<uint64_t>(d);
  t.size = n * DTypeSize(w.dtype);
  return t;
}

std::optional<TransformedTensor> BnbTransformProvider::Plan(const store::ManifestTensor& t) {
  if (quant::IsQuantStateTensorName(t.name)) return std::nullopt;  // companions load as they are
  auto it = weights_.find(t.name);
  if (it == weights_.end()) return quantize_.Plan(t);
  const store::ManifestTensor logical = Logical(t, it->second);
  if (std::optional<TransformedTensor> plan = quantize_.Plan(logical)) return plan;
  TransformedTensor out;  // the dequantized dtype is the one asked for: no cast
  out.dtype = logical.dtype;
  out.shape = logical.shape;
  out.size = logical.size;
  return out;
}

absl::StatusOr<std::unique_ptr<TensorTransform>> BnbTransformProvider::Begin(
    const store::ManifestTensor& t, const TransformedTensor& output) {
  auto it = weights_.find(t.name);
  if (it == weights_.end()) return quantize_.Begin(t, output);
  const Weight& w = it->second;
  // The companions: "<w>.absmax", ... for 4-bit; "<m>.SCB" and "<w>_format" for int8.
  const std::string module = t.name.ends_with(".weight") ? t.name.substr(0, t.name.size() - 7)
                                                         : t.name;
  std::map<std::string, quant::NamedTensor> companions;
  for (const store::ManifestTensor& c : options_.manifest.tensors) {
    const bool mine = w.four_bit ? c.name.starts_with(t.name + ".")
                                 : (c.name == module + ".SCB" || c.name == t.name + "_format");
    if (!mine || !quant::IsQuantStateTensorName(c.name)) continue;
    ASSIGN_OR_RETURN(std::string bytes,
                     store::ReadStoredTensor(*options_.store, options_.manifest, c));
    companions[c.name] = ToNamed(c, bytes);
  }
  const store::ManifestTensor logical = Logical(t, w);
  std::unique_ptr<TensorTransform> inner;
  if (quantize_.Plan(logical)) {
    ASSIGN_OR_RETURN(inner, quantize_.Begin(logical, output));
  }
  return std::unique_ptr<TensorTransform>(new BnbWeightTransform(
      t, w.four_bit, std::move(companions), w.dtype, std::move(inner), output.dtype));
}

absl::Status BnbTransformProvider::ExpandTensors(LoadedModel& model) const {
  std::vector<LoadedTensor> kept;
  for (LoadedTensor& t : model.mutable_tensors()) {
    // Companions were consumed by the dequantization.
    if (!quant::IsQuantStateTensorName(t.name)) kept.push_back(std::move(t));
  }
  model.mutable_tensors() = std::move(kept);
  return quantize_.ExpandTensors(model);
}

}  // namespace loadstar::loader
