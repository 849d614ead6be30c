// Writes a model directory and, in the same pass, variants derived from its tensors (the
// one-pass `store save --quantize`, issue 14 item 4): while WriteModelDir copies each
// source tensor into <dir>, a TensorTap hands the same bytes to one writer thread per
// variant, which makes the variant's tensors from them (quantizes) and writes them with
// its own WriteModelDir (and its own write-behind thread) into <dir>/variants/<key>/.
// The disk sees the model's and the variants' bytes once each, nothing is read back, and
// the quantization runs on the variant's thread, overlapped with the copy. A tensor a
// variant keeps as it is (embeddings, lm_head) it writes while the copy still reads it
// (TensorTap::GetPrefix). Memory: the tap's two buffers of a whole tensor each (the
// producer is at most one tensor ahead of the slowest variant; 2 x the largest tensor)
// plus each variant's outputs of one tensor.
//
// Like WriteModelDir this is the non-atomic layer: Store::SaveWithVariants writes into the
// model's temp directory and publishes the model and its variants with one rename.
//
// Thread safety: VariantPass is used by one thread; Write starts and joins the variant
// threads itself.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "store/manifest.h"
#include "store/model_writer.h"
#include "store/tensor.h"
#include "store/tensor_tap.h"

namespace loadstar::store {

// A model's variants live in <model dir>/variants/<key>/.
inline constexpr char kVariantsDirName[] = "variants";

// What a variant made in the pass knows of the model before the copy starts.
struct SaveSource {
  std::string name;                 // the store name being saved
  std::vector<TensorSpec> tensors;  // in write order (the order of the model's manifest)
  std::string config_json;          // the checkpoint's config.json ("" when it has none)
  std::string prequant_format;      // "" unless pre-quantized: gguf, gptq, awq, bitsandbytes
};

// A variant written while its model is copied.
struct InPassVariant {
  std::string key;                // canonical key (ValidateVariantKey)
  std::string quantization_json;  // kept verbatim in its manifest
  // Called once, before anything is written: the variant's tensors, in the order they are
  // written. Their fillers run on the variant's writer thread and get model tensor i's
  // bytes from `reader.Get(i)` (increasing i; Release when done with them). An error here
  // fails the save before any byte is written.
  std::function<absl::StatusOr<std::vector<TensorInput>>(const SaveSource& source,
                                                         TapReader reader)>
      make_tensors;
};

struct ModelWithVariants {
  Manifest model;
  std::vector<Manifest> variants;  // in the order the variants were given
};

class VariantPass {
 public:
  // Checks the keys (valid, none twice) and makes every variant's tensors for the model
  // `source`. InvalidArgument for a bad or repeated key; make_tensors' errors as they are.
  static absl::StatusOr<VariantPass> Plan(SaveSource source, std::vector<InPassVariant> variants);

  bool empty() const { return variants_.empty(); }

  // Writes the model's `groups` (their specs must be source.tensors, in order) into `dir`
  // as WriteModelDir does, with `progress` for the model's bytes, and every variant into
  // <dir>/variants/<key>/ at the same time. Returns the manifests written. On error the
  // first failure is returned (a variant's prefixed with "variant KEY of model NAME: ")
  // after every thread stopped; `dir` is left half-written for the caller to remove.
  absl::StatusOr<ModelWithVariants> Write(Env* env, const std::string& dir,
                                          Manifest model_fields,
                                          std::vector<std::vector<TensorInput>> groups,
                                          const ProgressCallback& progress = {}) &&;

 private:
  struct Planned {
    std::string key;
    std::string quantization_json;
    std::vector<TensorInput> tensors;
  };

  SaveSource source_;
  std::shared_ptr<TensorTap> tap_;
  std::vector<Planned> variants_;
};

}  // namespace loadstar::store
