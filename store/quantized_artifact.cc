#include "store/quantized_artifact.h"

#include "store/prequant_info.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <future>
#include <memory>
#include <new>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/env.h"
#include "base/status_macros.h"
#include "quant/quant_state.h"
#include "store/checksum.h"

namespace loadstar::store {

namespace {

bool IsFloatingDType(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

// The quantization `tensor` gets (kNone for non-floating tensors, as PrepareTensor does)
// and the shape it is quantized in (Conv1D weights transposed).
quant::QuantType EffectiveType(const quant::QuantConfig& config, std::string_view model_type,
                               const ManifestTensor& tensor, std::vector<int64_t>* shape) {
  *shape = tensor.shape;
  quant::QuantType type = quant::ShouldQuantize(config, tensor.name, tensor.shape);
  if (type == quant::QuantType::kNone || !IsFloatingDType(tensor.dtype)) {
    return quant::QuantType::kNone;
  }
  if (quant::IsConv1DWeight(model_type, tensor.name, tensor.shape)) {
    *shape = {tensor.shape[1], tensor.shape[0]};
  }
  return type;
}

std::string StateKeyName(quant::QuantType type) {
  return fmt::format("quant_state.bitsandbytes__{}", quant::QuantTypeName(type));
}

// The bytes of the stored tensors, in manifest order, read with O_DIRECT (the store's
// tensors start on 4 KiB boundaries) into two buffers reused from tensor to tensor,
// checksums verified: while the caller quantizes tensor i, a thread reads and verifies
// tensor i+1. Direct reads because a model just saved is not in the page cache (the
// writer bypasses it); reused buffers because a fresh buffer or page-cache page per
// tensor costs a page fault per 4 KiB, which on a VM with free page reporting is slower
// than the quantization itself.
class StoredTensorReader {
 public:
  ~StoredTensorReader() {
    if (pending_.valid()) pending_.wait();
  }

  // The bytes of manifest.tensors[index] (valid until the next call); starts reading
  // index + 1 behind it. `store` and `manifest` must outlive the reader.
  absl::StatusOr<std::string_view> Read(const Store& store, const Manifest& manifest,
                                        size_t index) {
    absl::Status status;
    if (pending_.valid() && pending_index_ == index) {
      status = pending_.get();
      std::swap(current_, next_);
    } else {
      if (pending_.valid()) pending_.wait();  // out of order: its bytes are not needed
      pending_ = {};
      status = ReadInto(store, manifest, manifest.tensors[index], &current_);
    }
    if (!status.ok()) return status;
    if (index + 1 < manifest.tensors.size()) {
      pending_index_ = index + 1;
      pending_ = std::async(std::launch::async, [this, &store, &manifest, index] {
        return ReadInto(store, manifest, manifest.tensors[index + 1], &next_);
      });
    }
    return std::string_view(current_.data.get(), manifest.tensors[index].size);
  }

 private:
  struct AlignedDelete {
    void operator()(char* p) const {
      ::operator delete[](p, std::align_val_t(kDirectIoAlignment));
    }
  };
  struct Buffer {
    std::unique_ptr<char[], AlignedDelete> data;
    uint64_t capacity = 0;
  };

  static absl::Status ReadInto(const Store& store, const Manifest& manifest,
                               const ManifestTensor& tensor, Buffer* buffer) {
    ASSIGN_OR_RETURN(std::string path, store.DataFilePath(manifest, tensor.file));
    ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                     store.env()->NewRandomAccessFile(path, {.direct_io = true}));
    const uint64_t aligned =
        (tensor.size + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment;
    if (aligned > buffer->capacity) {
      buffer->data.reset(static_cast<char*>(
          ::operator new[](aligned, std::align_val_t(kDirectIoAlignment))));
      buffer->capacity = aligned;
    }
    uint64_t done = 0;
    while (done < tensor.size) {
      // Whole blocks for O_DIRECT; the last read may return short at the end of the file.
      size_t n = static_cast<size_t>(std::min<uint64_t>(aligned - done, 64ull << 20));
      ASSIGN_OR_RETURN(size_t got, file->Read(tensor.offset + done, n, buffer->data.get() + done));
      if (got == 0) break;
      done += got;
    }
    if (done < tensor.size) {
      return absl::DataLossError(
          fmt::format("{}: tensor {} is cut short at byte {}", path, tensor.name, done));
    }
    if (ChunkChecksums(std::string_view(buffer->data.get(), tensor.size)) != tensor.checksums) {
      return absl::DataLossError(
          fmt::format("{}: checksum mismatch in tensor {}", path, tensor.name));
    }
    return absl::OkStatus();
  }

  Buffer current_, next_;
  std::future<absl::Status> pending_;
  size_t pending_index_ = 0;
};

// SourceTensorBytes of a stored manifest: its tensors read by a StoredTensorReader.
class StoredBytes : public SourceTensorBytes {
 public:
  StoredBytes(const Store& store, Manifest manifest)
      : store_(store), manifest_(std::move(manifest)) {}
  // The reader's buffer of the last tensor read stays valid until the next Read, so a
  // repeated Get (GetPrefix, piece by piece) of that tensor is answered from it.
  absl::StatusOr<std::string_view> Get(size_t index) override {
    if (index == last_index_) return last_;
    ASSIGN_OR_RETURN(last_, reader_.Read(store_, manifest_, index));
    last_index_ = index;
    return last_;
  }

 private:
  const Store& store_;
  const Manifest manifest_;
  size_t last_index_ = SIZE_MAX;
  std::string_view last_;
  StoredTensorReader reader_;  // last: its read-ahead uses store_ and manifest_
};

// One output of a prepared source tensor: its name, dtype and shape, and its bytes.
struct PreparedOutput {
  const quant::NamedTensor* meta;  // data empty when `bytes` are the source's own
  std::string_view bytes;
};

// Shared by the fillers of one QuantizedInputs list: the prepared outputs of the source
// tensor being written (one at a time).
struct PrepareState {
  std::vector<ManifestTensor> tensors;  // the source tensors (name, dtype, shape)
  quant::QuantConfig config;
  std::string model_type;
  std::shared_ptr<SourceTensorBytes> bytes;
  int current = -1;  // source index whose outputs `prepared` holds
  quant::PreparedTensor prepared;
  // Set when the current source passes through unchanged: its bytes are written from the
  // source's own (GetPrefix, piece by piece, held until its last byte is written) instead
  // of a PrepareTensor copy, which would need the whole tensor first and a fresh buffer
  // (a page fault per 4 KiB); the embeddings and lm_head are the largest tensors of a
  // model, and a source that streams (the one-pass save's tap) lets the variant write
  // them while they are still being copied.
  bool passing = false;
  bool released = false;  // the passed-through source was released at its last byte
  int64_t quantized = 0;  // source tensors the fillers prepared (PrepareTensor or passed)

  // Whether PrepareTensor would return `tensor`'s bytes as they are: not quantized and
  // not cast (EffectiveType kNone and no torch_dtype cast, as in PrepareTensor).
  bool PassesThrough(const ManifestTensor& tensor) const {
    std::vector<int64_t> shape;
    return EffectiveType(config, model_type, tensor, &shape) == quant::QuantType::kNone &&
           (!IsFloatingDType(tensor.dtype) || tensor.dtype == config.torch_dtype);
  }

  // Output `index` of source tensor `source`, quantizing the source when it is not the
  // one held; its bytes are valid at least up to `needed`. `spec` is what the writer
  // planned; its shape is not checked when `check_shape` is false (a quant_state sized
  // at write time).
  absl::StatusOr<PreparedOutput> Output(int source, size_t index, const TensorSpec& spec,
                                        bool check_shape, uint64_t needed) {
    if (current != source) {
      if (passing && !released) bytes->Release(static_cast<size_t>(current));
      prepared = {};
      passing = false;
      released = false;
      current = -1;
      const ManifestTensor& tensor = tensors[source];
      if (PassesThrough(tensor)) {
        prepared.tensors.push_back({tensor.name, tensor.dtype, tensor.shape, {}});
        passing = true;
      } else {
        ASSIGN_OR_RETURN(std::string_view data, bytes->Get(static_cast<size_t>(source)));
        absl::StatusOr<quant::PreparedTensor> p = quant::PrepareTensor(
            config, tensor.name, tensor.dtype, tensor.shape, data.data(), {},
            quant::IsConv1DWeight(model_type, tensor.name, tensor.shape));
        // The outputs are copies: the source bytes are not needed any more.
        bytes->Release(static_cast<size_t>(source));
        if (!p.ok()) return p.status();
        prepared = *std::move(p);
      }
      ++quantized;
      current = source;
    }
    if (index >= prepared.tensors.size()) {
      return absl::InternalError(
          fmt::format("{}: quantization produced {} tensors, expected more",
                      tensors[source].name, prepared.tensors.size()));
    }
    const quant::NamedTensor& t = prepared.tensors[index];
    if (t.name != spec.name || t.dtype != spec.dtype || (check_shape && t.shape != spec.shape)) {
      return absl::InternalError(fmt::format(
          "{}: quantized output {} {} {} differs from the planned {} {} {}",
          tensors[source].name, t.name, DTypeName(t.dtype), ShapeToString(t.shape),
          spec.name, DTypeName(spec.dtype), ShapeToString(spec.shape)));
    }
    if (passing) {
      if (released) {
        return absl::InternalError(
            fmt::format("{}: bytes asked for after the last one", tensors[source].name));
      }
      ASSIGN_OR_RETURN(std::string_view data,
                       bytes->GetPrefix(static_cast<size_t>(source), needed));
      return PreparedOutput{&t, data};
    }
    return PreparedOutput{
        &t, std::string_view(reinterpret_cast<const char*>(t.data.data()), t.data.size())};
  }

  // A filler copied output bytes up to `end` of source `source`. A passed-through source
  // is released at its last byte, not at the next source: the writer may wait for a free
  // block in between, and a producer (the tap) may be waiting for this tensor's buffer.
  void Copied(int source, uint64_t end) {
    if (passing && current == source && end == tensors[source].size && !released) {
      bytes->Release(static_cast<size_t>(source));
      released = true;
    }
  }
};

// QuantizedInputs' list. `upfront_state_bytes`, when set, sizes a double-quant
// quant_state before writing (StateSizing::kUpFront); else it is sized at write.
using StateBytesFn = std::function<absl::StatusOr<int64_t>(size_t source)>;

absl::StatusOr<std::vector<TensorInput>> BuildQuantizedInputs(
    std::vector<ManifestTensor> tensors, const quant::QuantConfig& config,
    std::string_view model_type, std::shared_ptr<SourceTensorBytes> bytes,
    const StateBytesFn& upfront_state_bytes, QuantizedInputsStats* stats) {
  if (config.type == quant::QuantType::kNone) {
    return absl::InvalidArgumentError("no quantization requested (type none)");
  }
  auto state = std::make_shared<PrepareState>();
  state->tensors = std::move(tensors);
  state->config = config;
  state->model_type = std::string(model_type);
  state->bytes = std::move(bytes);
  std::vector<TensorInput> inputs;
  for (size_t i = 0; i < state->tensors.size(); ++i) {
    const ManifestTensor& t = state->tensors[i];
    std::vector<int64_t> shape;
    quant::QuantType type = EffectiveType(config, model_type, t, &shape);
    const bool four_bit = type == quant::QuantType::kNf4 || type == quant::QuantType::kFp4;
    // With double quant the quant_state's length depends on the weight's absmax.
    const bool state_at_write = four_bit && config.double_quant && !upfront_state_bytes;
    int64_t state_bytes = 0;
    if (four_bit) {
      if (config.double_quant && !state_at_write) {
        ASSIGN_OR_RETURN(state_bytes, upfront_state_bytes(i));
      } else {
        state_bytes = QuantStateJsonBytes(config, shape);
      }
    }
    std::vector<TensorSpec> specs = QuantizedTensorSpecs(config, model_type, t, state_bytes);
    for (size_t k = 0; k < specs.size(); ++k) {
      TensorInput in;
      in.spec = specs[k];
      const int source = static_cast<int>(i);
      const TensorSpec spec = specs[k];
      // The quant_state is the last output of a 4-bit weight.
      const bool at_write = state_at_write && k + 1 == specs.size();
      in.fill = [state, source, k, spec, at_write](uint64_t offset, char* dst,
                                                   size_t n) -> absl::Status {
        ASSIGN_OR_RETURN(PreparedOutput out,
                         state->Output(source, k, spec, /*check_shape=*/!at_write, offset + n));
        if (offset + n > out.bytes.size()) {
          return absl::InternalError(fmt::format("{}: read past its end", out.meta->name));
        }
        if (n) std::memcpy(dst, out.bytes.data() + offset, n);
        state->Copied(source, offset + n);
        return absl::OkStatus();
      };
      if (at_write) {
        // Called after the weight and absmax were written: the source is still held.
        in.shape_at_write = [state, source, k, spec]() -> absl::StatusOr<std::vector<int64_t>> {
          ASSIGN_OR_RETURN(PreparedOutput out,
                           state->Output(source, k, spec, /*check_shape=*/false, 0));
          return out.meta->shape;
        };
      }
      inputs.push_back(std::move(in));
    }
  }
  if (stats != nullptr) stats->fill_quantizations = [state] { return state->quantized; };
  return inputs;
}

}  // namespace

std::string StoredModelType(const Store& store, const std::string& name) {
  absl::StatusOr<std::string> dir = store.ModelDir(name);
  if (!dir.ok()) return "";
  absl::StatusOr<std::string> text =
      ReadFileToString(store.env(), JoinPath(*dir, "config.json"), 16 << 20);
  if (!text.ok()) return "";
  return ModelTypeOfConfig(*text);
}

absl::StatusOr<std::string> ReadStoredTensor(const Store& store, const Manifest& manifest,
                                             const ManifestTensor& tensor) {
  ASSIGN_OR_RETURN(std::string path, store.DataFilePath(manifest, tensor.file));
  ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                   store.env()->NewRandomAccessFile(path));
  std::string bytes(tensor.size, '\0');
  uint64_t done = 0;
  while (done < tensor.size) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(tensor.size - done, 64ull << 20));
    ASSIGN_OR_RETURN(size_t got, file->Read(tensor.offset + done, n, bytes.data() + done));
    if (got == 0) {
      return absl::DataLossError(
          fmt::format("{}: tensor {} is cut short at byte {}", path, tensor.name, done));
    }
    done += got;
  }
  std::vector<uint64_t> sums = ChunkChecksums(bytes);
  if (sums != tensor.checksums) {
    return absl::DataLossError(
        fmt::format("{}: checksum mismatch in tensor {}", path, tensor.name));
  }
  return bytes;
}

absl::StatusOr<quant::PreparedTensor> PrepareStoredTensor(const Store& store,
                                                          const Manifest& manifest,
                                                          const ManifestTensor& tensor,
                                                          const quant::QuantConfig& config,
                                                          std::string_view model_type) {
  ASSIGN_OR_RETURN(std::string bytes, ReadStoredTensor(store, manifest, tensor));
  return quant::PrepareTensor(config, tensor.name, tensor.dtype, tensor.shape, bytes.data(), {},
                              quant::IsConv1DWeight(model_type, tensor.name, tensor.shape));
}

int64_t QuantStateJsonBytes(const quant::QuantConfig& config, const std::vector<int64_t>& shape,
                            float nested_offset) {
  quant::Quantized4bit q;
  q.spec = config.fp4_spec();
  q.dtype = config.torch_dtype;
  q.shape = shape;
  q.nested.offset = nested_offset;
  return static_cast<int64_t>(quant::QuantStateJson(q).size());
}

std::vector<TensorSpec> QuantizedTensorSpecs(const quant::QuantConfig& config,
                                             std::string_view model_type,
                                             const ManifestTensor& tensor,
                                             int64_t quant_state_bytes) {
  std::vector<int64_t> shape;
  quant::QuantType type = EffectiveType(config, model_type, tensor, &shape);
  const std::string& w = tensor.name;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<TensorSpec> out;
  switch (type) {
    case quant::QuantType::kNone:
      out.push_back({w, IsFloatingDType(tensor.dtype) ? config.torch_dtype : tensor.dtype,
                     tensor.shape});
      break;
    case quant::QuantType::kNf4:
    case quant::QuantType::kFp4: {
      const int64_t blocks = (n + config.blocksize - 1) / config.blocksize;
      out.push_back({w, DType::kU8, {(n + 1) / 2, 1}});
      out.push_back({w + ".absmax", config.double_quant ? DType::kU8 : DType::kF32, {blocks}});
      out.push_back({w + ".quant_map", DType::kF32, {16}});
      if (config.double_quant) {
        out.push_back({w + ".nested_absmax", DType::kF32, {(blocks + 255) / 256}});
        out.push_back({w + ".nested_quant_map", DType::kF32, {256}});
      }
      out.push_back({w + "." + StateKeyName(type), DType::kU8, {quant_state_bytes}});
      break;
    }
    case quant::QuantType::kInt8: {
      std::string module = w;
      if (module.size() > 7 && module.ends_with(".weight")) module.resize(module.size() - 7);
      out.push_back({w, DType::kI8, shape});
      out.push_back({module + ".SCB", DType::kF32, {shape[0]}});
      out.push_back({w + "_format", DType::kU8, {}});
      break;
    }
  }
  return out;
}

absl::Status PrequantizedModelError(std::string_view model, std::string_view format,
                                    const quant::QuantConfig& config) {
  return absl::InvalidArgumentError(fmt::format(
      "model {} is a pre-quantized {} checkpoint: its bnb variants are made while loading "
      "(deploy or load it with quantization {}), not stored or exported",
      model, format, config.VariantKey()));
}

std::string ModelTypeOfConfig(std::string_view config_json) {
  nlohmann::json j = nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("model_type") || !j["model_type"].is_string()) return "";
  return j["model_type"].get<std::string>();
}

absl::StatusOr<std::vector<TensorInput>> QuantizedInputs(const Store& store,
                                                         const Manifest& manifest,
                                                         const quant::QuantConfig& config,
                                                         std::string_view model_type,
                                                         StateSizing sizing,
                                                         QuantizedInputsStats* stats) {
  if (config.type == quant::QuantType::kNone) {
    return absl::InvalidArgumentError("no quantization requested (type none)");
  }
  // A stored GGUF file's tensors are packed blocks, not weights this path can quantize.
  ASSIGN_OR_RETURN(std::optional<PrequantInfo> prequant, ReadPrequantInfo(store, manifest.name));
  if (prequant) return PrequantizedModelError(manifest.name, prequant->format, config);
  StateBytesFn upfront;
  if (sizing == StateSizing::kUpFront) {
    // Sizing pass: the JSON prints the nested offset (see the header).
    upfront = [&store, &manifest, &config, model_type, stats](size_t i) -> absl::StatusOr<int64_t> {
      ASSIGN_OR_RETURN(quant::PreparedTensor p,
                       PrepareStoredTensor(store, manifest, manifest.tensors[i], config,
                                           model_type));
      if (stats != nullptr) ++stats->sizing_quantizations;
      return static_cast<int64_t>(p.tensors.back().data.size());
    };
  }
  return BuildQuantizedInputs(manifest.tensors, config, model_type,
                              std::make_shared<StoredBytes>(store, manifest), upfront, stats);
}

absl::StatusOr<std::vector<TensorInput>> QuantizedInputsFrom(
    std::vector<ManifestTensor> tensors, const quant::QuantConfig& config,
    std::string_view model_type, std::shared_ptr<SourceTensorBytes> bytes,
    QuantizedInputsStats* stats) {
  return BuildQuantizedInputs(std::move(tensors), config, model_type, std::move(bytes), {},
                              stats);
}

std::vector<TensorInput> StoredInputs(const Store& store, const Manifest& manifest) {
  // One open file at a time, reused across the tensors of a data file.
  struct FileState {
    uint32_t index = UINT32_MAX;
    std::unique_ptr<RandomAccessFile> file;
    ChunkHasher hasher;
    Manifest manifest;
  };
  auto files = std::make_shared<FileState>();
  files->manifest = manifest;
  std::vector<TensorInput> inputs;
  for (const ManifestTensor& t : manifest.tensors) {
    TensorInput in;
    in.spec = {t.name, t.dtype, t.shape};
    in.fill = [&store, files, t](uint64_t offset, char* dst,
                                                           size_t n) -> absl::Status {
      if (files->index != t.file) {
        ASSIGN_OR_RETURN(std::string path, store.DataFilePath(files->manifest, t.file));
        ASSIGN_OR_RETURN(files->file, store.env()->NewRandomAccessFile(path));
        files->index = t.file;
      }
      uint64_t done = 0;
      while (done < n) {
        ASSIGN_OR_RETURN(size_t got,
                         files->file->Read(t.offset + offset + done, n - done, dst + done));
        if (got == 0) {
          return absl::DataLossError(
              fmt::format("{}: tensor {} is cut short", files->file->path(), t.name));
        }
        done += got;
      }
      files->hasher.Update(std::string_view(dst, n));
      if (offset + n == t.size && files->hasher.Finish() != t.checksums) {
        return absl::DataLossError(
            fmt::format("{}: checksum mismatch in tensor {}", files->file->path(), t.name));
      }
      return absl::OkStatus();
    };
    inputs.push_back(std::move(in));
  }
  return inputs;
}

absl::StatusOr<Manifest> SaveQuantizedVariant(Store& store, const std::string& name,
                                              const quant::QuantConfig& config,
                                              const ProgressCallback& progress,
                                              bool overwrite, QuantizedInputsStats* stats) {
  ASSIGN_OR_RETURN(Manifest manifest, store.GetManifest(name));
  // WriteModelDir sizes a double-quant quant_state when it reaches it: one quantization
  // per weight.
  ASSIGN_OR_RETURN(std::vector<TensorInput> inputs,
                   QuantizedInputs(store, manifest, config, StoredModelType(store, name),
                                   StateSizing::kAtWrite, stats));
  VariantSpec spec;
  spec.model = name;
  spec.key = config.VariantKey();
  spec.quantization_json = config.ToHfJson().dump();
  spec.overwrite = overwrite;
  return store.WriteVariant(spec, std::move(inputs), progress);
}

}  // namespace loadstar::store
