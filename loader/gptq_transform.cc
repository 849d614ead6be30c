#include "loader/gptq_transform.h"

#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/status_macros.h"
#include "quant/gptq_awq.h"
#include "store/quantized_artifact.h"

namespace loadstar::loader {
namespace {

// Buffers the packed qweight; at the end dequantizes it and hands the fp32 weight on.
class GptqWeightTransform : public TensorTransform {
 public:
  GptqWeightTransform(std::string format, store::PrequantLinear l, std::string qzeros,
                      std::string scales, std::string g_idx, uint64_t qweight_bytes,
                      std::unique_ptr<TensorTransform> inner, DType out_dtype)
      : format_(std::move(format)), l_(l), qzeros_(std::move(qzeros)),
        scales_(std::move(scales)), g_idx_(std::move(g_idx)), inner_(std::move(inner)),
        out_dtype_(out_dtype) {
    qweight_.reserve(qweight_bytes);
  }

  absl::Status Consume(const char* data, uint64_t bytes, OutputWriter&) override {
    qweight_.append(data, bytes);
    return absl::OkStatus();
  }

  absl::Status Finish(OutputWriter& out) override {
    quant::GptqShape s{l_.bits, l_.in, l_.out, l_.group_size};
    std::vector<float> w(static_cast<size_t>(l_.in * l_.out));
    const auto* qw = reinterpret_cast<const int32_t*>(qweight_.data());
    const auto* qz = reinterpret_cast<const int32_t*>(qzeros_.data());
    const auto* sc = reinterpret_cast<const uint16_t*>(scales_.data());
    if (format_ == "awq") {
      quant::DequantizeAwq(s, qw, qz, sc, w.data());
    } else {
      const int32_t* g = nullptr;
      if (l_.g_idx) {
        g = reinterpret_cast<const int32_t*>(g_idx_.data());
        for (int64_t k = 0; k < l_.in; ++k) {
          if (g[k] < 0 || g[k] >= s.groups()) {
            return absl::DataLossError(fmt::format("g_idx[{}] = {} out of range", k, g[k]));
          }
        }
      }
      quant::DequantizeGptq(s, l_.v2, qw, qz, sc, g, w.data());
    }
    if (inner_) {
      RETURN_IF_ERROR(inner_->Consume(reinterpret_cast<const char*>(w.data()), w.size() * 4, out));
      return inner_->Finish(out);
    }
    std::vector<char> cast(w.size() * DTypeSize(out_dtype_));
    RETURN_IF_ERROR(quant::CastFloatTensor(DType::kF32, w.data(), static_cast<int64_t>(w.size()),
                                           out_dtype_, cast.data()));
    return out.Write(0, cast.data(), cast.size());
  }

 private:
  std::string format_;
  store::PrequantLinear l_;
  std::string qzeros_, scales_, g_idx_, qweight_;
  std::unique_ptr<TensorTransform> inner_;
  DType out_dtype_;
};

}  // namespace

GptqTransformProvider::GptqTransformProvider(Options options)
    : options_(std::move(options)),
      quantize_(QuantizeTransformProvider::Options{.config = options_.config,
                                                   .model_type = options_.model_type,
                                                   .quantize_threads = 1}) {}

store::ManifestTensor GptqTransformProvider::Logical(const store::ManifestTensor& qweight,
                                                     const std::string& module,
                                                     const store::PrequantLinear& l) const {
  store::ManifestTensor t = qweight;
  t.name = module + ".weight";
  t.dtype = DType::kF32;
  t.shape = {l.out, l.in};
  t.size = static_cast<uint64_t>(l.out * l.in) * 4;
  return t;
}

std::optional<TransformedTensor> GptqTransformProvider::Plan(const store::ManifestTensor& t) {
  std::string module, part;
  const store::PrequantLinear* l = options_.info.FindLinear(t.name, &module, &part);
  if (l == nullptr) return quantize_.Plan(t);
  if (part != "qweight") return std::nullopt;  // companions load as they are
  const store::ManifestTensor logical = Logical(t, module, *l);
  if (std::optional<TransformedTensor> plan = quantize_.Plan(logical)) return plan;
  TransformedTensor out;  // fp32 requested: no cast, but still dequantized
  out.dtype = DType::kF32;
  out.shape = logical.shape;
  out.size = logical.size;
  return out;
}

absl::StatusOr<std::unique_ptr<TensorTransform>> GptqTransformProvider::Begin(
    const store::ManifestTensor& t, const TransformedTensor& output) {
  std::string module, part;
  const store::PrequantLinear* l = options_.info.FindLinear(t.name, &module, &part);
  if (l == nullptr) return quantize_.Begin(t, output);
  auto read = [&](const std::string& suffix) -> absl::StatusOr<std::string> {
    const store::ManifestTensor* c = options_.manifest.Find(module + "." + suffix);
    if (c == nullptr) {
      return absl::DataLossError(fmt::format("model {}: {}.{} is missing",
                                             options_.manifest.name, module, suffix));
    }
    return store::ReadStoredTensor(*options_.store, options_.manifest, *c);
  };
  ASSIGN_OR_RETURN(std::string qzeros, read("qzeros"));
  ASSIGN_OR_RETURN(std::string scales, read("scales"));
  std::string g_idx;
  if (l->g_idx) {
    ASSIGN_OR_RETURN(g_idx, read("g_idx"));
  }
  const store::ManifestTensor logical = Logical(t, module, *l);
  std::unique_ptr<TensorTransform> inner;
  if (quantize_.Plan(logical)) {
    ASSIGN_OR_RETURN(inner, quantize_.Begin(logical, output));
  }
  return std::unique_ptr<TensorTransform>(new GptqWeightTransform(
      options_.info.format, *l, std::move(qzeros), std::move(scales), std::move(g_idx), t.size,
      std::move(inner), output.dtype));
}

absl::Status GptqTransformProvider::ExpandTensors(LoadedModel& model) const {
  std::vector<LoadedTensor> kept;
  for (LoadedTensor& t : model.mutable_tensors()) {
    std::string module, part;
    if (options_.info.FindLinear(t.name, &module, &part) != nullptr) {
      if (part != "qweight") continue;  // companions: consumed by the dequantization
      t.name = module + ".weight";
    }
    kept.push_back(std::move(t));
  }
  model.mutable_tensors() = std::move(kept);
  return quantize_.ExpandTensors(model);
}

void AnnotateGptq(LoadedModel& model, const store::PrequantInfo& info) {
  for (LoadedTensor& t : model.mutable_tensors()) {
    std::string module, part;
    const store::PrequantLinear* l = info.FindLinear(t.name, &module, &part);
    if (l == nullptr || part != "qweight") continue;
    t.transform_info =
        nlohmann::json({{"format", info.format}, {"bits", l->bits}, {"in", l->in},
                        {"out", l->out}, {"group_size", l->group_size}, {"g_idx", l->g_idx},
                        {"checkpoint_format", info.format == "awq" ? "gemm"
                                              : l->v2            ? "gptq_v2"
                                                                 : "gptq"}})
            .dump();
  }
}

}  // namespace loadstar::loader
