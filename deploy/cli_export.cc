// `loadstar store export NAME --quantization nf4|fp4|int8 [--double-quant] [--blocksize N]
// --out DIR` (SPEC §3.1): an HF checkpoint in bitsandbytes' serialized layout
// (store/hf_export.h).
#include <memory>
#include <string>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "deploy/cli_common.h"
#include "deploy/cli_quant.h"
#include "nlohmann/json.hpp"
#include "store/hf_export.h"
#include "store/store.h"

namespace loadstar::cli {

void RegisterStoreExportCommand(CLI::App& store_cmd) {
  struct Flags {
    std::string name;
    std::string store;
    std::string quantization;
    QuantFlags quant;
    std::string out;
    bool overwrite = false;
    double max_shard_gb = 5.0;
    std::string output = "text";
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = store_cmd.add_subcommand(
      "export",
      "write a stored model as an HF bitsandbytes checkpoint (reuses a stored variant of "
      "the same config, else quantizes while reading)");
  cmd->add_option("name", flags->name, "store name")->required();
  cmd->add_option("--quantization", flags->quantization,
                  "nf4, fp4, int8, or a variant key such as nf4-bs128-dq")
      ->required();
  AddQuantModifierFlags(cmd, &flags->quant);
  cmd->add_option("--out", flags->out, "output directory (must not exist)")->required();
  cmd->add_flag("--overwrite", flags->overwrite, "replace an existing output directory");
  cmd->add_option("--max-shard-size", flags->max_shard_gb,
                  "GB per safetensors shard (default 5, as transformers)");
  cmd->add_option("--store", flags->store,
                  "store directory (default $LOADSTAR_STORE or ~/.loadstar/store)");
  AddOutputFlag(cmd, &flags->output);
  cmd->callback([flags] {
    Run([&]() -> absl::Status {
      ASSIGN_OR_RETURN(quant::QuantConfig config,
                       ParseQuantFlag("--quantization", flags->quantization, flags->quant));
      if (config.type == quant::QuantType::kNone) {
        return absl::InvalidArgumentError("--quantization none: nothing to export");
      }
      if (!(flags->max_shard_gb > 0)) {
        return absl::InvalidArgumentError("--max-shard-size: must be positive");
      }
      ASSIGN_OR_RETURN(std::unique_ptr<store::Store> store,
                       store::Store::Open({.root = ResolveStoreDir(flags->store)}));
      uint64_t start = Env::Default()->NowMicros();
      store::ExportResult result;
      {
        Progress progress(fmt::format("exporting {} ({})", flags->name, config.VariantKey()),
                          flags->output == "json");
        ASSIGN_OR_RETURN(
            result,
            store::ExportQuantized(
                *store, flags->name, config, flags->out,
                [&](uint64_t done, uint64_t total, std::string_view t) {
                  progress.Update(done, total, t);
                },
                {.max_shard_bytes = static_cast<uint64_t>(flags->max_shard_gb * 1e9),
                 .overwrite = flags->overwrite}));
        progress.Finish();
      }
      double seconds = static_cast<double>(Env::Default()->NowMicros() - start) / 1e6;
      if (flags->output == "json") {
        nlohmann::json j = {{"model", flags->name},
                            {"variant", config.VariantKey()},
                            {"out", flags->out},
                            {"source", result.source},
                            {"files", result.files},
                            {"tensors", result.tensors},
                            {"bytes", result.tensor_bytes},
                            {"seconds", seconds}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("exported %s (%s, from %s) to %s: %zu tensors, %s in %.2f s\n",
                    flags->name.c_str(), config.VariantKey().c_str(), result.source.c_str(),
                    flags->out.c_str(), result.tensors,
                    FormatBytes(result.tensor_bytes).c_str(), seconds);
      }
      return absl::OkStatus();
    });
  });
}

}  // namespace loadstar::cli
