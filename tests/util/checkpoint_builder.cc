#include "tests/util/checkpoint_builder.h"

#include <bit>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "base/env.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "store/safetensors_writer.h"
#include "store/tensor.h"

namespace loadstar::testing {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t HashName(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Round-to-nearest-even float -> IEEE half, for values in [-1, 1) (no overflow cases).
uint16_t FloatToHalf(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  uint32_t sign = (bits >> 16) & 0x8000;
  int32_t exponent = static_cast<int32_t>((bits >> 23) & 0xFF) - 127 + 15;
  uint32_t mantissa = bits & 0x7FFFFF;
  if (exponent <= 0) {
    if (exponent < -10) return static_cast<uint16_t>(sign);
    mantissa |= 0x800000;
    uint32_t shift = static_cast<uint32_t>(14 - exponent);
    uint32_t half = mantissa >> shift;
    uint32_t rest = mantissa & ((1u << shift) - 1);
    uint32_t midpoint = 1u << (shift - 1);
    if (rest > midpoint || (rest == midpoint && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = (static_cast<uint32_t>(exponent) << 10) | (mantissa >> 13);
  uint32_t rest = mantissa & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;
  return static_cast<uint16_t>(sign | half);
}

template <typename T>
void Put(std::string& out, size_t index, T value) {
  std::memcpy(out.data() + index * sizeof(T), &value, sizeof(T));
}

}  // namespace

std::string PseudoRandomTensorBytes(DType dtype, uint64_t elements, uint64_t seed) {
  size_t width = DTypeSize(dtype);
  std::string out(elements * width, '\0');
  uint64_t state = seed;
  for (uint64_t i = 0; i < elements; ++i) {
    uint64_t bits = SplitMix64(state);
    // Uniform in [-1, 1) with 24 bits of precision.
    float unit = static_cast<float>(bits >> 40) / static_cast<float>(1 << 23) - 1.0f;
    switch (dtype) {
      case DType::kBool:
        out[i] = static_cast<char>(bits & 1);
        break;
      case DType::kF8E4M3: {
        uint8_t byte = static_cast<uint8_t>(bits);
        if ((byte & 0x7F) == 0x7F) byte &= 0x80;  // NaN -> signed zero
        out[i] = static_cast<char>(byte);
        break;
      }
      case DType::kF8E5M2: {
        uint8_t byte = static_cast<uint8_t>(bits);
        if ((byte & 0x7C) == 0x7C) byte &= 0x83;  // Inf/NaN exponent -> subnormal
        out[i] = static_cast<char>(byte);
        break;
      }
      case DType::kF16:
        Put<uint16_t>(out, i, FloatToHalf(unit));
        break;
      case DType::kBF16:
        // Truncating toward zero keeps the value finite and inside [-1, 1).
        Put<uint16_t>(out, i, static_cast<uint16_t>(std::bit_cast<uint32_t>(unit) >> 16));
        break;
      case DType::kF32:
        Put<float>(out, i, unit);
        break;
      case DType::kF64:
        Put<double>(out, i, static_cast<double>(unit));
        break;
      default:
        std::memcpy(out.data() + i * width, &bits, width);
        break;
    }
  }
  return out;
}

CheckpointBuilder& CheckpointBuilder::Add(const std::string& name, DType dtype,
                                          std::vector<int64_t> shape) {
  std::optional<uint64_t> size = store::TensorByteSize(dtype, shape);
  if (!size) throw std::invalid_argument("CheckpointBuilder::Add: bad shape for " + name);
  uint64_t elements = *size / DTypeSize(dtype);
  std::string bytes = PseudoRandomTensorBytes(dtype, elements, seed_ ^ HashName(name));
  return AddBytes(name, dtype, std::move(shape), std::move(bytes));
}

CheckpointBuilder& CheckpointBuilder::AddBytes(const std::string& name, DType dtype,
                                               std::vector<int64_t> shape, std::string bytes) {
  std::optional<uint64_t> size = store::TensorByteSize(dtype, shape);
  if (!size || *size != bytes.size()) {
    throw std::invalid_argument("CheckpointBuilder::AddBytes: size mismatch for " + name);
  }
  tensors_.push_back({name, dtype, std::move(shape), std::move(bytes)});
  return *this;
}

CheckpointBuilder& CheckpointBuilder::Shards(int n) {
  shards_ = n < 1 ? 1 : n;
  return *this;
}

CheckpointBuilder& CheckpointBuilder::Config(std::string json) {
  config_ = std::move(json);
  return *this;
}

CheckpointBuilder& CheckpointBuilder::ExtraFile(const std::string& name, std::string contents) {
  extra_files_[name] = std::move(contents);
  return *this;
}

CheckpointBuilder& CheckpointBuilder::Metadata(std::map<std::string, std::string> metadata) {
  metadata_ = std::move(metadata);
  return *this;
}

const std::string& CheckpointBuilder::Bytes(const std::string& name) const {
  static const std::string kEmpty;
  for (const BuilderTensor& tensor : tensors_) {
    if (tensor.name == name) return tensor.bytes;
  }
  return kEmpty;
}

std::string CheckpointBuilder::ShardName(int index) const {
  if (shards_ == 1) return "model.safetensors";
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, shards_);
}

std::vector<std::vector<const BuilderTensor*>> CheckpointBuilder::Split() const {
  std::vector<std::vector<const BuilderTensor*>> shards(shards_);
  size_t count = tensors_.size();
  for (size_t i = 0; i < count; ++i) {
    shards[i * shards_ / (count == 0 ? 1 : count)].push_back(&tensors_[i]);
  }
  return shards;
}

std::string CheckpointBuilder::ShardOf(const std::string& name) const {
  auto shards = Split();
  for (size_t s = 0; s < shards.size(); ++s) {
    for (const BuilderTensor* tensor : shards[s]) {
      if (tensor->name == name) return ShardName(static_cast<int>(s));
    }
  }
  return "";
}

absl::Status CheckpointBuilder::Write(const std::string& dir) const {
  Env* env = Env::Default();
  RETURN_IF_ERROR(env->CreateDirs(dir));
  std::string config = config_;
  if (config.empty()) {
    std::string dtype = tensors_.empty() ? "float16"
                                         : std::string(TorchDTypeName(tensors_[0].dtype));
    config = nlohmann::json{{"model_type", "test"}, {"torch_dtype", dtype}}.dump(2);
  }
  RETURN_IF_ERROR(WriteFileAtomically(env, JoinPath(dir, "config.json"), config));
  for (const auto& [name, contents] : extra_files_) {
    if (name.find('/') != std::string::npos) {
      RETURN_IF_ERROR(env->CreateDirs(DirName(JoinPath(dir, name))));
    }
    RETURN_IF_ERROR(WriteFileAtomically(env, JoinPath(dir, name), contents));
  }
  auto shards = Split();
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  uint64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    std::vector<store::TensorInput> inputs;
    for (const BuilderTensor* tensor : shards[s]) {
      inputs.push_back(store::TensorInput::FromBytes({tensor->name, tensor->dtype, tensor->shape},
                                                     tensor->bytes));
      weight_map[tensor->name] = ShardName(static_cast<int>(s));
      total += tensor->bytes.size();
    }
    RETURN_IF_ERROR(store::WriteSafetensors(env, JoinPath(dir, ShardName(static_cast<int>(s))),
                                            std::move(inputs), metadata_));
  }
  if (shards_ > 1) {
    nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}},
                                    {"weight_map", weight_map}};
    RETURN_IF_ERROR(
        WriteFileAtomically(env, JoinPath(dir, "model.safetensors.index.json"), index.dump(2)));
  }
  return absl::OkStatus();
}

}  // namespace loadstar::testing
