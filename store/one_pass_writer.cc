#include "store/one_pass_writer.h"

#include <set>
#include <thread>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "store/names.h"

namespace loadstar::store {

absl::StatusOr<VariantPass> VariantPass::Plan(SaveSource source,
                                              std::vector<InPassVariant> variants) {
  std::set<std::string> keys;
  for (const InPassVariant& v : variants) {
    RETURN_IF_ERROR(ValidateVariantKey(v.key));
    if (!keys.insert(v.key).second) {
      return absl::InvalidArgumentError(
          fmt::format("variant {} of model {} requested twice", v.key, source.name));
    }
    if (!v.make_tensors) {
      return absl::InvalidArgumentError(fmt::format("variant {} has no tensors", v.key));
    }
  }
  VariantPass pass;
  std::vector<uint64_t> sizes;
  for (const TensorSpec& spec : source.tensors) {
    std::optional<uint64_t> size = TensorByteSize(spec.dtype, spec.shape);
    if (!size) {
      return absl::InvalidArgumentError(fmt::format(
          "tensor \"{}\": invalid shape {}", spec.name, ShapeToString(spec.shape)));
    }
    sizes.push_back(*size);
  }
  pass.tap_ = std::make_shared<TensorTap>(std::move(sizes), variants.size());
  for (size_t c = 0; c < variants.size(); ++c) {
    ASSIGN_OR_RETURN(std::vector<TensorInput> tensors,
                     variants[c].make_tensors(source, TapReader{pass.tap_, c}));
    pass.variants_.push_back(
        {variants[c].key, std::move(variants[c].quantization_json), std::move(tensors)});
  }
  pass.source_ = std::move(source);
  return pass;
}

absl::StatusOr<ModelWithVariants> VariantPass::Write(
    Env* env, const std::string& dir, Manifest model_fields,
    std::vector<std::vector<TensorInput>> groups, const ProgressCallback& progress) && {
  // The tap's sizes and the variants' plans come from source_: the model must be it.
  size_t index = 0;
  for (auto& group : groups) {
    for (TensorInput& tensor : group) {
      const TensorSpec& spec = tensor.spec;
      if (index >= source_.tensors.size() || spec.name != source_.tensors[index].name ||
          spec.dtype != source_.tensors[index].dtype ||
          spec.shape != source_.tensors[index].shape || tensor.shape_at_write) {
        return absl::InvalidArgumentError(fmt::format(
            "model {}: tensor {} (\"{}\") is not the one its variants were planned for",
            source_.name, index, spec.name));
      }
      if (!variants_.empty() && tensor.fill) {
        // The copy's bytes, once in the write block, also go to the variants.
        tensor.fill = [inner = std::move(tensor.fill), tap = tap_, index](
                          uint64_t offset, char* dst, size_t n) -> absl::Status {
          RETURN_IF_ERROR(inner(offset, dst, n));
          return tap->Copy(index, offset, dst, n);
        };
      }
      ++index;
    }
  }
  if (index != source_.tensors.size()) {
    return absl::InvalidArgumentError(fmt::format(
        "model {}: {} tensors to write, its variants were planned for {}", source_.name,
        index, source_.tensors.size()));
  }
  ModelWithVariants out;
  if (variants_.empty()) {
    ASSIGN_OR_RETURN(out.model, WriteModelDir(env, dir, std::move(model_fields),
                                              std::move(groups), progress));
    return out;
  }

  const std::string variants_dir = JoinPath(dir, kVariantsDirName);
  std::vector<std::string> variant_dirs;
  for (const Planned& v : variants_) {
    variant_dirs.push_back(JoinPath(variants_dir, v.key));
    RETURN_IF_ERROR(env->CreateDirs(variant_dirs.back()));
  }
  const std::string name = model_fields.name;
  std::vector<absl::StatusOr<Manifest>> results(variants_.size(),
                                                absl::UnknownError("not written"));
  std::vector<std::thread> threads;
  for (size_t c = 0; c < variants_.size(); ++c) {
    threads.emplace_back([&, c] {
      Planned& v = variants_[c];
      Manifest fields;
      fields.name = name;
      fields.variant = v.key;
      fields.quantization_json = v.quantization_json;
      // Grouped as Store::WriteVariant groups them: the same files as a separate pass.
      absl::StatusOr<Manifest> written = WriteModelDir(env, variant_dirs[c], std::move(fields),
                                                       GroupBySize(std::move(v.tensors)));
      if (!written.ok()) {
        written = absl::Status(written.status().code(),
                               fmt::format("variant {} of model {}: {}", v.key, name,
                                           std::string(written.status().message())));
        tap_->Fail(written.status());  // the copy stops at its next byte
      }
      tap_->Detach(c);
      results[c] = std::move(written);
    });
  }
  absl::StatusOr<Manifest> model =
      WriteModelDir(env, dir, std::move(model_fields), std::move(groups), progress);
  if (!model.ok()) {
    tap_->Fail(absl::CancelledError(
        fmt::format("the copy of model {} stopped: {}", name, std::string(model.status().message()))));
  }
  for (std::thread& t : threads) t.join();
  // The model's own error first: when a variant stopped it, it is that variant's error.
  if (!model.ok()) return model.status();
  out.model = *std::move(model);
  for (absl::StatusOr<Manifest>& r : results) {
    if (!r.ok()) return r.status();
    out.variants.push_back(*std::move(r));
  }
  // The variants' directory entries, made after WriteModelDir synced `dir` or not.
  RETURN_IF_ERROR(env->SyncDir(variants_dir));
  RETURN_IF_ERROR(env->SyncDir(dir));
  return out;
}

}  // namespace loadstar::store
