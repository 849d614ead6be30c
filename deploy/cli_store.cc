// `loadstar store save|ls|inspect|verify|rm` (SPEC §3.1): the checkpoint store from the
// command line. `store export` is registered by cli_export.cc on the same subcommand.
#include <memory>
#include <string>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "deploy/cli_common.h"
#include "deploy/client/client.h"
#include "deploy/cli_quant.h"
#include "nlohmann/json.hpp"
#include "store/gguf.h"
#include "store/quantized_artifact.h"
#include "store/quantized_save.h"
#include "store/store.h"
#include "store/tensor.h"

namespace loadstar::cli {
namespace {

namespace v1 = loadstar::v1;

using store::Manifest;
using store::Store;

absl::StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& flag) {
  return Store::Open({.root = ResolveStoreDir(flag)});
}

void AddStoreFlag(CLI::App* cmd, std::string* dir) {
  cmd->add_option("--store", *dir, "store directory (default $LOADSTAR_STORE or "
                                   "~/.loadstar/store)");
}

// Adapts cli::Progress to the store's progress callback.
store::ProgressCallback ProgressTo(Progress& progress) {
  return [&progress](uint64_t done, uint64_t total, std::string_view tensor) {
    progress.Update(done, total, tensor);
  };
}

double SecondsSince(uint64_t start_us) {
  return static_cast<double>(Env::Default()->NowMicros() - start_us) / 1e6;
}

struct SaveFlags {
  std::string src;
  std::string name;
  std::string store;
  bool overwrite = false;
  std::vector<std::string> quantize;  // --quantize values (cli_quant.h)
  QuantFlags quant;
};

absl::Status RunSave(const SaveFlags& flags) {
  // Parse every --quantize first: a typo must fail before a long save.
  std::vector<quant::QuantConfig> configs;
  for (const std::string& q : flags.quantize) {
    ASSIGN_OR_RETURN(quant::QuantConfig config, ParseQuantFlag("--quantize", q, flags.quant));
    if (config.type == quant::QuantType::kNone) continue;
    configs.push_back(config);
  }
  if (!configs.empty() && store::LooksLikeGguf(Env::Default(), flags.src)) {
    return absl::InvalidArgumentError(fmt::format(
        "--quantize: {} is a GGUF file, already quantized; deploy or load it with "
        "--quantization nf4|fp4|int8 to re-quantize it while loading",
        flags.src));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenStore(flags.store));
  uint64_t start = Env::Default()->NowMicros();
  // One pass: every variant is quantized from the source bytes as the copy passes them
  // (store/quantized_save.h); the model and its variants appear together or not at all.
  store::ModelWithVariants saved;
  {
    Progress progress(configs.empty() ? fmt::format("saving {}", flags.name)
                                      : fmt::format("saving and quantizing {}", flags.name));
    ASSIGN_OR_RETURN(saved, store::SaveQuantized(*store, flags.src, flags.name, configs,
                                                 ProgressTo(progress),
                                                 {.overwrite = flags.overwrite}));
    progress.Finish();
  }
  double seconds = SecondsSince(start);
  const Manifest& manifest = saved.model;
  std::printf("saved %s: %zu tensors, %s in %.2f s (%.2f GB/s)\n", flags.name.c_str(),
              manifest.tensors.size(), FormatBytes(manifest.TotalBytes()).c_str(), seconds,
              seconds > 0 ? static_cast<double>(manifest.TotalBytes()) / seconds / 1e9 : 0.0);
  for (const Manifest& variant : saved.variants) {
    std::printf("saved variant %s of %s: %zu tensors, %s (same pass)\n",
                variant.variant.c_str(), flags.name.c_str(), variant.tensors.size(),
                FormatBytes(variant.TotalBytes()).c_str());
  }
  return absl::OkStatus();
}

void RegisterSave(CLI::App& store_cmd) {
  auto flags = std::make_shared<SaveFlags>();
  CLI::App* cmd = store_cmd.add_subcommand(
      "save", "copy a Hugging Face checkpoint or a GGUF file into the store");
  cmd->add_option("src", flags->src,
                  "HF model directory (config.json + *.safetensors) or a GGUF file (llama, "
                  "mistral, qwen2)")
      ->required();
  cmd->add_option("--name", flags->name, "store name, NAME or ORG/NAME")->required();
  AddStoreFlag(cmd, &flags->store);
  cmd->add_flag("--overwrite", flags->overwrite, "replace an existing model of that name");
  cmd->add_option("--quantize", flags->quantize,
                  "also store a quantized variant (repeatable): nf4, fp4, int8, or a variant "
                  "key such as nf4-bs128-dq; --blocksize/--double-quant apply to plain "
                  "nf4/fp4")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  AddQuantModifierFlags(cmd, &flags->quant);
  cmd->callback([flags] { Run([&] { return RunSave(*flags); }); });
}

void RegisterList(CLI::App& store_cmd) {
  struct Flags {
    std::string store;
    std::string output;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = store_cmd.add_subcommand("ls", "list stored models");
  AddStoreFlag(cmd, &flags->store);
  AddOutputFlag(cmd, &flags->output);
  cmd->callback([flags] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenStore(flags->store));
      ASSIGN_OR_RETURN(std::vector<store::ModelInfo> models, store->List());
      if (flags->output == "json") {
        nlohmann::json out = nlohmann::json::array();
        for (const store::ModelInfo& model : models) {
          out.push_back({{"name", model.name},
                         {"bytes", model.bytes},
                         {"tensors", model.tensors},
                         {"variants", model.variants}});
        }
        std::printf("%s\n", out.dump(2).c_str());
        return absl::OkStatus();
      }
      std::printf("%-40s %8s %12s  %s\n", "NAME", "TENSORS", "SIZE", "VARIANTS");
      for (const store::ModelInfo& model : models) {
        std::printf("%-40s %8zu %12s  %s\n", model.name.c_str(), model.tensors,
                    FormatBytes(model.bytes).c_str(),
                    fmt::format("{}", fmt::join(model.variants, ",")).c_str());
      }
      return absl::OkStatus();
    });
  });
}

void RegisterInspect(CLI::App& store_cmd) {
  struct Flags {
    std::string name;
    std::string variant;
    std::string store;
    std::string output;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = store_cmd.add_subcommand("inspect", "show a stored model's tensors");
  cmd->add_option("name", flags->name, "store name")->required();
  cmd->add_option("--variant", flags->variant, "a quantized variant's key");
  AddStoreFlag(cmd, &flags->store);
  AddOutputFlag(cmd, &flags->output);
  cmd->callback([flags] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenStore(flags->store));
      ASSIGN_OR_RETURN(Manifest manifest, store->GetManifest(flags->name, flags->variant));
      if (flags->output == "json") {
        nlohmann::json out = nlohmann::json::parse(store::SerializeManifest(manifest));
        out["total_bytes"] = manifest.TotalBytes();
        std::printf("%s\n", out.dump(2).c_str());
        return absl::OkStatus();
      }
      std::printf("model:   %s\n", manifest.name.c_str());
      if (!manifest.variant.empty()) {
        std::printf("variant: %s %s\n", manifest.variant.c_str(),
                    manifest.quantization_json.c_str());
      }
      std::printf("tensors: %zu, %s in %zu data files\n\n", manifest.tensors.size(),
                  FormatBytes(manifest.TotalBytes()).c_str(), manifest.files.size());
      std::printf("%-60s %-8s %-20s %12s\n", "TENSOR", "DTYPE", "SHAPE", "BYTES");
      for (const store::ManifestTensor& tensor : manifest.tensors) {
        std::printf("%-60s %-8s %-20s %12llu\n", tensor.name.c_str(),
                    std::string(DTypeName(tensor.dtype)).c_str(),
                    store::ShapeToString(tensor.shape).c_str(),
                    static_cast<unsigned long long>(tensor.size));
      }
      return absl::OkStatus();
    });
  });
}

void RegisterVerify(CLI::App& store_cmd) {
  struct Flags {
    std::string name;
    std::string store;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = store_cmd.add_subcommand(
      "verify", "re-hash every tensor (and variant); exit 0 only if all checksums match");
  cmd->add_option("name", flags->name, "store name")->required();
  AddStoreFlag(cmd, &flags->store);
  cmd->callback([flags] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenStore(flags->store));
      uint64_t start = Env::Default()->NowMicros();
      uint64_t verified = 0;
      {
        Progress progress(fmt::format("verifying {}", flags->name));
        RETURN_IF_ERROR(store->Verify(
            flags->name, [&](uint64_t done, uint64_t total, std::string_view tensor) {
              verified = done;
              progress.Update(done, total, tensor);
            }));
        progress.Finish();
      }
      std::printf("%s: OK, %s verified in %.2f s\n", flags->name.c_str(),
                  FormatBytes(verified).c_str(), SecondsSince(start));
      return absl::OkStatus();
    });
  });
}

// After `store rm`: a deployment of the model keeps its ready instances, but its next
// load fails. Asks the controller of $LOADSTAR_ADDR briefly; says nothing if none answers.
void WarnIfDeployed(const std::string& model) {
  absl::StatusOr<std::unique_ptr<client::Client>> c = client::Client::Connect({.rpc_seconds = 1});
  if (!c.ok()) return;
  absl::StatusOr<std::vector<v1::Deployment>> deployments = (*c)->ListDeployments();
  if (!deployments.ok()) return;
  std::string names;
  for (const v1::Deployment& d : *deployments) {
    if (d.model() == model) names += (names.empty() ? "" : ", ") + d.name();
  }
  if (names.empty()) return;
  std::fprintf(stderr,
               "warning: %s is deployed (%s at %s); its ready instances keep running, but new "
               "loads of it will fail (--force hides this)\n",
               model.c_str(), names.c_str(), (*c)->address().c_str());
}

void RegisterRemove(CLI::App& store_cmd) {
  struct Flags {
    std::string name;
    std::string store;
    bool force = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = store_cmd.add_subcommand("rm", "remove a model and its variants");
  cmd->add_option("name", flags->name, "store name")->required();
  AddStoreFlag(cmd, &flags->store);
  cmd->add_flag("--force", flags->force, "no warning when the model is deployed");
  cmd->callback([flags] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenStore(flags->store));
      RETURN_IF_ERROR(store->Remove(flags->name));
      std::printf("removed %s\n", flags->name.c_str());
      if (!flags->force) WarnIfDeployed(flags->name);
      return absl::OkStatus();
    });
  });
}

}  // namespace

void RegisterStoreCommands(CLI::App& app) {
  CLI::App* store_cmd = app.add_subcommand("store", "the checkpoint store");
  store_cmd->require_subcommand(1);
  RegisterSave(*store_cmd);
  RegisterList(*store_cmd);
  RegisterInspect(*store_cmd);
  RegisterVerify(*store_cmd);
  RegisterRemove(*store_cmd);
  RegisterStoreExportCommand(*store_cmd);
}

}  // namespace loadstar::cli
