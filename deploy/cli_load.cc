// `loadstar load NAME` (SPEC §3.1): loads a stored model onto devices once, prints how
// many bytes in how long, and frees it. The quick way to check a store and measure the
// loader on a machine (bench/bench_load.cc does the same with baselines).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "daemon/deployment_config.h"
#include "deploy/cli_common.h"
#include "deploy/cli_quant.h"
#include "loader/device.h"
#include "loader/device_backends.h"
#include "loader/load_pipeline.h"
#include "loader/model_source.h"
#include "loader/quantized_load.h"
#include "store/prequant_info.h"
#include "nlohmann/json.hpp"
#include "store/store.h"

namespace loadstar::cli {
namespace {

struct LoadFlags {
  std::string name;
  std::string store;
  std::string devices = "auto";
  std::string variant;
  std::string placement;  // default: auto with several devices, else single
  std::string io_engine = "io_uring";
  int threads = 0;
  uint64_t chunk_mib = 4;
  std::string device_memory = "64GiB";
  bool cold = false;
  std::string output = "text";
  // --quantization (cli_quant.h): the stored variant when one matches (unless
  // --no-artifact), else quantize while streaming (loader/quantized_load.h).
  std::string quantization;
  QuantFlags quant;
  bool no_artifact = false;
};

absl::Status RunLoad(const LoadFlags& flags) {
  ASSIGN_OR_RETURN(std::unique_ptr<store::Store> store,
                   store::Store::Open({.root = ResolveStoreDir(flags.store)}));
  quant::QuantConfig qconfig;
  if (flags.quantization.empty()) {
    // --torch-dtype alone matters for a GGUF file, which is dequantized to it.
    ASSIGN_OR_RETURN(qconfig.torch_dtype,
                     quant::ParseTorchDtype(flags.quant.torch_dtype, "--torch-dtype"));
    qconfig.unspecified = true;
  } else {
    ASSIGN_OR_RETURN(qconfig, ParseQuantFlag("--quantization", flags.quantization, flags.quant));
    if (!flags.variant.empty()) {
      return absl::InvalidArgumentError("--variant and --quantization exclude each other");
    }
  }
  // A stored GGUF file is always loaded through LoadQuantized: none dequantizes it, keep
  // serves its packed blocks (loader/quantized_load.h LoadPrequantized).
  ASSIGN_OR_RETURN(std::optional<store::PrequantInfo> prequant,
                   store::ReadPrequantInfo(*store, flags.name));
  if (prequant && !flags.variant.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "--variant: model {} is a pre-quantized {} checkpoint without stored variants; use "
        "--quantization", flags.name, prequant->format));
  }
  const bool quantized = qconfig.type != quant::QuantType::kNone || prequant.has_value();
  std::string variant = flags.variant;
  if (quantized && !flags.no_artifact) variant = loader::MatchingVariant(*store, flags.name, qconfig);
  ASSIGN_OR_RETURN(loader::ModelSource source,
                   loader::ModelSourceFromStore(*store, flags.name, variant));
  ASSIGN_OR_RETURN(uint64_t device_memory,
                   daemon::ParseByteSize(flags.device_memory, "--device-memory"));
  ASSIGN_OR_RETURN(std::vector<std::unique_ptr<loader::Device>> owned,
                   loader::CreateDevices(flags.devices, device_memory));
  std::vector<loader::Device*> devices;
  for (auto& d : owned) devices.push_back(d.get());

  loader::PlanOptions plan;
  if (flags.placement.empty()) {
    plan.placement = devices.size() > 1 ? loader::Placement::kAuto : loader::Placement::kSingle;
  } else {
    ASSIGN_OR_RETURN(plan.placement, loader::ParsePlacement(flags.placement));
  }

  loader::LoadPipeline::Options options;
  options.threads = flags.threads;
  options.io.kind = flags.io_engine;
  options.chunk_bytes = flags.chunk_mib << 20;
  options.ring_allocator = loader::StagingAllocatorFor(devices);  // pinned for CUDA devices
  if (flags.cold) {
    // Cold: nothing of the model in the page cache, and O_DIRECT so the load does not
    // put it back.
    RETURN_IF_ERROR(loader::DropFromPageCache(source));
    options.io_mode = loader::IoMode::kDirect;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<loader::LoadPipeline> pipeline,
                   loader::LoadPipeline::Create(options));

  const bool json = flags.output == "json";
  loader::LoadStats stats;
  uint64_t quantized_bytes = 0;
  std::string load_source;
  {
    Progress progress(fmt::format("loading {}", source.key), /*quiet=*/json);
    auto on_progress = [&](const loader::LoadProgress& p) {
      progress.Update(p.bytes, p.total_bytes,
                      fmt::format("{}/{} tensors", p.tensors, p.total_tensors));
    };
    std::unique_ptr<loader::LoadedModel> model;
    if (quantized) {
      ASSIGN_OR_RETURN(loader::QuantizedLoad q,
                       loader::LoadQuantized(*pipeline, *store, flags.name, qconfig, devices,
                                             plan, {.use_artifact = !flags.no_artifact},
                                             nullptr, on_progress, &stats));
      model = std::move(q.model);
      quantized_bytes = q.quantized_bytes;
      load_source = q.source;
    } else {
      ASSIGN_OR_RETURN(model, pipeline->Load(source, devices, plan, nullptr, on_progress, &stats));
      quantized_bytes = model->tensor_bytes();
      load_source = variant.empty() ? "checkpoint" : "artifact";
    }
    progress.Finish();
    RETURN_IF_ERROR(model->Free());
  }

  std::vector<std::string> names;
  for (loader::Device* d : devices) names.push_back(d->name());
  if (json) {
    nlohmann::json out = {{"model", source.key},  {"bytes", stats.bytes},
                          {"seconds", stats.seconds}, {"gbps", stats.gbps},
                          {"tensors", stats.tensors}, {"devices", names},
                          {"io", stats.io},           {"threads", pipeline->threads()},
                          {"cold", flags.cold}};
    if (quantized) {
      out["quantization"] = qconfig.keep_prequantized ? "keep" : qconfig.VariantKey();
      out["quantized_bytes"] = quantized_bytes;
      out["source"] = load_source;
    }
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("loaded %s: %d tensors, %s in %.3f s (%.2f GB/s) on %s via %s\n",
                source.key.c_str(), stats.tensors, FormatBytes(stats.bytes).c_str(),
                stats.seconds, stats.gbps, fmt::format("{}", fmt::join(names, ",")).c_str(),
                stats.io.c_str());
    if (quantized) {
      std::printf("quantized %s from %s: %s resident\n",
                  qconfig.keep_prequantized ? "keep" : qconfig.VariantKey().c_str(),
                  load_source.c_str(), FormatBytes(quantized_bytes).c_str());
    }
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterLoadCommand(CLI::App& app) {
  auto flags = std::make_shared<LoadFlags>();
  CLI::App* cmd = app.add_subcommand(
      "load", "load a stored model onto devices once; print bytes, seconds, GB/s");
  cmd->add_option("name", flags->name, "store name of the model")->required();
  cmd->add_option("--store", flags->store,
                  "store directory (default $LOADSTAR_STORE or ~/.loadstar/store)");
  cmd->add_option("--devices", flags->devices, "auto | cuda | host:N")->default_val("auto");
  cmd->add_option("--variant", flags->variant, "load a stored variant (e.g. nf4-bs64-dq)");
  cmd->add_option("--placement", flags->placement, "single | auto | tensor_parallel");
  cmd->add_option("--io-engine", flags->io_engine, "io_uring | pread")->default_val("io_uring");
  cmd->add_option("--threads", flags->threads, "loader threads (0: one per core)")
      ->default_val(0);
  cmd->add_option("--chunk-mib", flags->chunk_mib, "read size in MiB")->default_val(4);
  cmd->add_option("--device-memory", flags->device_memory,
                  "memory of each host device, e.g. 16GiB (as `worker` and `up` spell it)")
      ->default_val("64GiB");
  cmd->add_flag("--cold", flags->cold,
                "drop the model from the page cache first and read with O_DIRECT");
  cmd->add_option("--quantization", flags->quantization,
                  "nf4 | fp4 | int8 | a variant key (nf4-bs128-dq): read the stored variant "
                  "when there is one, else quantize while loading; for a stored GGUF file: "
                  "none (default: dequantize to --torch-dtype), keep (the packed blocks as "
                  "stored) or nf4|fp4|int8 (dequantize, then quantize)");
  AddQuantModifierFlags(cmd, &flags->quant);
  cmd->add_flag("--no-artifact", flags->no_artifact,
                "with --quantization: quantize while loading even if a variant is stored");
  AddOutputFlag(cmd, &flags->output);
  cmd->callback([flags] { Run([&] { return RunLoad(*flags); }); });
}

}  // namespace loadstar::cli
