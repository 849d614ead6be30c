#include "daemon/probe.h"

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <random>

#include "base/env.h"
#include "base/status_macros.h"
#include "daemon/load_spec.h"
#include "quant/blockwise.h"
#include "quant/float16.h"
#include "quant/int8.h"
#include "quant/policy.h"
#include "quant/quant_state.h"
#include "quant/quantized_linear.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

namespace {

// The bytes of tensor `name` of the store's original checkpoint of `model`.
absl::StatusOr<std::pair<store::ManifestTensor, std::string>> ReadStoredTensor(
    const store::Store& store, const std::string& model, const std::string& name) {
  ASSIGN_OR_RETURN(store::Manifest manifest, store.GetManifest(model));
  const store::ManifestTensor* t = manifest.Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(fmt::format("model '{}' has no tensor '{}'", model, name));
  }
  ASSIGN_OR_RETURN(std::string path, store.DataFilePath(manifest, t->file));
  ASSIGN_OR_RETURN(auto file, store.env()->NewRandomAccessFile(path, {}));
  std::string bytes(t->size, '\0');
  ASSIGN_OR_RETURN(size_t n, file->Read(t->offset, t->size, bytes.data()));
  if (n != t->size) return absl::DataLossError(fmt::format("{}: short read of '{}'", path, name));
  return std::make_pair(*t, std::move(bytes));
}

}  // namespace

absl::StatusOr<v1::ProbeResponse> ProbeQuantizedWeight(const v1::InstanceHandle& handle,
                                                       const TensorReader& read,
                                                       const v1::LoadSpec& spec,
                                                       const store::Store& store,
                                                       const std::string& tensor, uint32_t rows) {
  std::map<std::string, const v1::TensorInfo*> tensors;
  for (const v1::TensorInfo& t : handle.tensors()) tensors[t.name()] = &t;
  ASSIGN_OR_RETURN(quant::QuantConfig config, QuantConfigFromLoadSpec(spec));
  auto serialized_4bit = [&](const std::string& w) { return tensors.contains(w + ".absmax"); };
  auto serialized_int8 = [&](const std::string& w) {
    return w.size() > 7 && tensors.contains(w.substr(0, w.size() - 7) + ".SCB");
  };
  auto probeable = [&](const v1::TensorInfo& t) {
    if (serialized_4bit(t.name()) || serialized_int8(t.name())) return true;
    return config.type != quant::QuantType::kNone &&
           quant::ShouldQuantize(config, t.name(), {t.shape().begin(), t.shape().end()}) !=
               quant::QuantType::kNone;
  };
  std::string name = tensor;
  if (name.empty()) {
    for (const v1::TensorInfo& t : handle.tensors()) {
      if (probeable(t)) {
        name = t.name();
        break;
      }
    }
    if (name.empty()) {
      return absl::FailedPreconditionError(fmt::format(
          "instance {} has no quantized weight to probe (quantization: {})",
          handle.instance_id(), spec.quantization().method().empty() ? "none"
                                                                      : spec.quantization().method()));
    }
  } else if (!tensors.contains(name) || !probeable(*tensors.at(name))) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' is not a quantized weight of instance {}", name, handle.instance_id()));
  }

  // The reference: the checkpoint's weight, [n, k].
  ASSIGN_OR_RETURN(auto stored, ReadStoredTensor(store, handle.model(), name));
  const auto& [ref_info, ref_bytes] = stored;
  if (ref_info.shape.size() != 2) {
    return absl::InvalidArgumentError(fmt::format("'{}' is not 2-D", name));
  }
  int64_t n = ref_info.shape[0], k = ref_info.shape[1];
  int64_t m = std::max<uint32_t>(rows, 1);

  std::vector<Half> x(m * k);
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (Half& h : x) h = FromFloat<Half>(dist(rng));

  ASSIGN_OR_RETURN(std::vector<float> ref,
                   quant::LinearReference(x.data(), m, k, ref_info.dtype, ref_bytes.data(), n));
  // Reads loaded tensors for quant::Parse4bit / ParseInt8.
  std::map<std::string, quant::NamedTensor> cache;
  quant::TensorLookup lookup = [&](std::string_view tn) -> const quant::NamedTensor* {
    std::string key(tn);
    if (auto it = cache.find(key); it != cache.end()) return &it->second;
    auto t = tensors.find(key);
    if (t == tensors.end()) return nullptr;
    quant::NamedTensor nt;
    nt.name = key;
    nt.dtype = ParseDType(t->second->dtype()).value_or(DType::kU8);
    nt.shape.assign(t->second->shape().begin(), t->second->shape().end());
    nt.data.resize(t->second->size());
    if (!read(key, 0, nt.data.size(), reinterpret_cast<char*>(nt.data.data())).ok()) return nullptr;
    return &cache.emplace(key, std::move(nt)).first->second;
  };
  std::vector<float> y;
  if (serialized_4bit(name)) {
    ASSIGN_OR_RETURN(quant::Quantized4bit q, quant::Parse4bit(name, lookup));
    ASSIGN_OR_RETURN(y, quant::Fp4Linear(x.data(), m, k, q));
  } else if (serialized_int8(name)) {
    ASSIGN_OR_RETURN(quant::QuantizedInt8 q, quant::ParseInt8(name, lookup));
    ASSIGN_OR_RETURN(y, quant::Int8Linear(x.data(), m, k, q, config.llm_int8_threshold));
  } else {
    // Loaded unquantized: quantize the loaded bytes as the deployment asks.
    const v1::TensorInfo& t = *tensors.at(name);
    std::string loaded(t.size(), '\0');
    RETURN_IF_ERROR(read(name, 0, t.size(), loaded.data()));
    DType dtype = ParseDType(t.dtype()).value_or(DType::kF16);
    if (config.type == quant::QuantType::kInt8) {
      ASSIGN_OR_RETURN(quant::QuantizedInt8 q, quant::QuantizeInt8(dtype, loaded.data(), {n, k}));
      ASSIGN_OR_RETURN(y, quant::Int8Linear(x.data(), m, k, q, config.llm_int8_threshold));
    } else {
      ASSIGN_OR_RETURN(quant::Quantized4bit q,
                       quant::Quantize4bit(config.fp4_spec(), dtype, loaded.data(), {n, k}));
      ASSIGN_OR_RETURN(y, quant::Fp4Linear(x.data(), m, k, q));
    }
  }
  ASSIGN_OR_RETURN(quant::LinearError err, quant::CompareToReference(y, ref));
  double sum = 0;
  for (size_t i = 0; i < y.size(); ++i) sum += std::fabs(y[i] - ref[i]);
  v1::ProbeResponse resp;
  resp.set_tensor(name);
  resp.set_max_abs_error(err.max_abs);
  resp.set_mean_abs_error(y.empty() ? 0 : sum / static_cast<double>(y.size()));
  resp.set_relative_error(err.relative_l2);
  return resp;
}

}  // namespace loadstar::daemon
