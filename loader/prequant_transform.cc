#include "loader/prequant_transform.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include "base/status_macros.h"
#include "quant/ggml_row_stream.h"

namespace loadstar::loader {
namespace {

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::optional<DType> PlainDType(quant::GgmlType t) {
  switch (t) {
    case quant::GgmlType::kF32: return DType::kF32;
    case quant::GgmlType::kF16: return DType::kF16;
    case quant::GgmlType::kBF16: return DType::kBF16;
    default: return std::nullopt;
  }
}

std::unique_ptr<quant::GgmlRowStream> StreamFor(const store::PrequantTensor& p, int threads) {
  return std::make_unique<quant::GgmlRowStream>(p.ggml_type, p.row_elems(), p.rows(),
                                                p.permute_heads, threads);
}

// none: dequantized rows cast to torch_dtype, written in order.
class DequantizeTransform : public TensorTransform {
 public:
  DequantizeTransform(std::unique_ptr<quant::GgmlRowStream> stream, DType to)
      : stream_(std::move(stream)), to_(to) {}
  absl::Status Consume(const char* data, uint64_t bytes, OutputWriter& out) override {
    return stream_->Append(data, bytes, [&](const float* v, int64_t n) -> absl::Status {
      buffer_.resize(static_cast<size_t>(n) * DTypeSize(to_));
      RETURN_IF_ERROR(quant::CastFloatTensor(DType::kF32, v, n, to_, buffer_.data()));
      RETURN_IF_ERROR(out.Write(written_, buffer_.data(), buffer_.size()));
      written_ += buffer_.size();
      return absl::OkStatus();
    });
  }
  absl::Status Finish(OutputWriter&) override { return stream_->Finish(); }

 private:
  std::unique_ptr<quant::GgmlRowStream> stream_;
  DType to_;
  uint64_t written_ = 0;
  std::vector<char> buffer_;
};

// nf4|fp4|int8 (and casts planned by the quantize provider): dequantized fp32 rows fed to
// the transform the quantize provider made for the logical fp32 tensor.
class DequantizeThenTransform : public TensorTransform {
 public:
  DequantizeThenTransform(std::unique_ptr<quant::GgmlRowStream> stream,
                          std::unique_ptr<TensorTransform> inner)
      : stream_(std::move(stream)), inner_(std::move(inner)) {}
  absl::Status Consume(const char* data, uint64_t bytes, OutputWriter& out) override {
    return stream_->Append(data, bytes, [&](const float* v, int64_t n) {
      return inner_->Consume(reinterpret_cast<const char*>(v), static_cast<uint64_t>(n) * 4, out);
    });
  }
  absl::Status Finish(OutputWriter& out) override {
    RETURN_IF_ERROR(stream_->Finish());
    return inner_->Finish(out);
  }

 private:
  std::unique_ptr<quant::GgmlRowStream> stream_;
  std::unique_ptr<TensorTransform> inner_;
};

}  // namespace

PrequantTransformProvider::PrequantTransformProvider(Options options)
    : options_(std::move(options)) {
  if (options_.config.type != quant::QuantType::kNone) {
    quantize_ = std::make_unique<QuantizeTransformProvider>(QuantizeTransformProvider::Options{
        .config = options_.config, .model_type = options_.model_type, .quantize_threads = 1});
  }
}

store::ManifestTensor PrequantTransformProvider::Logical(const store::ManifestTensor& tensor,
                                                         const store::PrequantTensor& p) const {
  store::ManifestTensor t = tensor;
  t.dtype = DType::kF32;
  t.shape = p.shape;
  t.size = static_cast<uint64_t>(Elements(p.shape)) * 4;
  return t;
}

bool PrequantTransformProvider::LoadsUnchanged(const store::ManifestTensor& tensor,
                                               const store::PrequantTensor& p) const {
  std::optional<DType> plain = PlainDType(p.ggml_type);
  return plain && *plain == options_.config.torch_dtype && p.permute_heads == 0 &&
         quant::ShouldQuantize(options_.config, tensor.name, p.shape) == quant::QuantType::kNone;
}

std::optional<TransformedTensor> PrequantTransformProvider::Plan(
    const store::ManifestTensor& tensor) {
  const store::PrequantTensor* p = options_.info.Find(tensor.name);
  if (p == nullptr) return quantize_ ? quantize_->Plan(tensor) : std::nullopt;
  if (LoadsUnchanged(tensor, *p)) return std::nullopt;
  if (quantize_) {
    if (std::optional<TransformedTensor> plan = quantize_->Plan(Logical(tensor, *p))) return plan;
  }
  TransformedTensor out;
  out.dtype = options_.config.torch_dtype;
  out.shape = p->shape;
  out.size = static_cast<uint64_t>(Elements(p->shape)) * DTypeSize(out.dtype);
  return out;
}

absl::StatusOr<std::unique_ptr<TensorTransform>> PrequantTransformProvider::Begin(
    const store::ManifestTensor& tensor, const TransformedTensor& output) {
  const store::PrequantTensor* p = options_.info.Find(tensor.name);
  if (p == nullptr) {
    if (!quantize_) return absl::InternalError(fmt::format("{}: nothing to transform", tensor.name));
    return quantize_->Begin(tensor, output);
  }
  std::unique_ptr<quant::GgmlRowStream> stream = StreamFor(*p, options_.threads);
  if (stream->total_bytes() != tensor.size) {
    return absl::DataLossError(fmt::format(
        "tensor {}: stored {} bytes but prequant.json describes {} {} ({} bytes)", tensor.name,
        tensor.size, quant::GgmlInfo(p->ggml_type).name, fmt::join(p->shape, "x"),
        stream->total_bytes()));
  }
  if (quantize_) {
    const store::ManifestTensor logical = Logical(tensor, *p);
    if (quantize_->Plan(logical)) {
      ASSIGN_OR_RETURN(std::unique_ptr<TensorTransform> inner, quantize_->Begin(logical, output));
      return std::unique_ptr<TensorTransform>(
          new DequantizeThenTransform(std::move(stream), std::move(inner)));
    }
  }
  return std::unique_ptr<TensorTransform>(
      new DequantizeTransform(std::move(stream), options_.config.torch_dtype));
}

absl::Status PrequantTransformProvider::ExpandTensors(LoadedModel& model) const {
  return quantize_ ? quantize_->ExpandTensors(model) : absl::OkStatus();
}

void AnnotatePrequant(LoadedModel& model, const store::PrequantInfo& info) {
  for (LoadedTensor& t : model.mutable_tensors()) {
    const store::PrequantTensor* p = info.Find(t.name);
    if (p == nullptr) continue;
    t.transform_info = nlohmann::json({{"format", info.format},
                                       {"ggml_type", std::string(quant::GgmlInfo(p->ggml_type).name)},
                                       {"shape", p->shape},
                                       {"source_name", p->source_name},
                                       {"permute_heads", p->permute_heads}})
                           .dump();
  }
}

}  // namespace loadstar::loader
