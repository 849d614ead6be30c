// Helpers shared by the benchmarks. Header-only: every bench/*.cc is its own executable.
#ifndef LOADSTAR_BENCH_BENCH_UTIL_H_
#define LOADSTAR_BENCH_BENCH_UTIL_H_

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "absl/status/status.h"
#include "base/env.h"
#include "loader/load_pipeline.h"
#include "store/safetensors_writer.h"
#include "store/store.h"

namespace loadstar::bench {

// Wall-clock seconds on a monotonic clock.
inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// CPU seconds (user + system) this process has used. The machine is shared, so wall-clock
// rates depend on what else runs; bytes per CPU-second of the same work do not (much).
inline double CpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

// The median (upper median for an even count); 0 for no values.
inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Finite fp16 values of both signs and many magnitudes (xorshift; the top exponent bit
// of each half cleared so there is no Inf/NaN), a stand-in for trained weights.
inline absl::Status FillFp16(uint64_t seed, uint64_t offset, char* dst, size_t n) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + offset + 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint64_t v = x & 0xBBFFBBFFBBFFBBFFull;  // clears the top exponent bit of each half
    std::memcpy(dst + i, &v, 8);
  }
  for (; i < n; ++i) dst[i] = 0;
  return absl::OkStatus();
}

struct LlamaShape {
  int64_t hidden = 4096;
  int64_t ffn = 11008;
  int64_t vocab = 32000;
};

// A Llama-shaped fp16 checkpoint of about `gib` GiB in `dir` (config.json and one
// model.safetensors): as many layers of `shape` as fit after the embeddings and lm_head.
inline absl::Status MakeLlamaCheckpoint(const std::string& dir, double gib,
                                        const LlamaShape& shape) {
  const int64_t h = shape.hidden, ffn = shape.ffn, vocab = shape.vocab;
  const uint64_t per_layer = (4 * h * h + 3 * h * ffn + 2 * h) * 2;
  const uint64_t fixed = (2 * vocab * h + h) * 2;
  const uint64_t target = static_cast<uint64_t>(gib * (1ull << 30));
  int layers = static_cast<int>((target - std::min(target, fixed) + per_layer - 1) / per_layer);
  layers = std::max(layers, 1);
  std::vector<store::TensorInput> tensors;
  uint64_t seed = 0;
  auto add = [&](std::string name, std::vector<int64_t> dims) {
    uint64_t s = ++seed;
    tensors.push_back(store::TensorInput{
        store::TensorSpec{std::move(name), DType::kF16, std::move(dims)},
        [s](uint64_t offset, char* dst, size_t n) { return FillFp16(s, offset, dst, n); }});
  };
  add("model.embed_tokens.weight", {vocab, h});
  for (int i = 0; i < layers; ++i) {
    std::string p = fmt::format("model.layers.{}.", i);
    add(p + "input_layernorm.weight", {h});
    for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
      add(p + "self_attn." + m + ".weight", {h, h});
    }
    add(p + "post_attention_layernorm.weight", {h});
    add(p + "mlp.gate_proj.weight", {ffn, h});
    add(p + "mlp.up_proj.weight", {ffn, h});
    add(p + "mlp.down_proj.weight", {h, ffn});
  }
  add("model.norm.weight", {h});
  add("lm_head.weight", {vocab, h});
  Env* env = Env::Default();
  if (absl::Status s = env->CreateDirs(dir); !s.ok()) return s;
  if (absl::Status s = WriteFileAtomically(
          env, JoinPath(dir, "config.json"),
          fmt::format("{{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], "
                      "\"hidden_size\": {}, \"intermediate_size\": {}, "
                      "\"num_hidden_layers\": {}, \"num_attention_heads\": 32, "
                      "\"vocab_size\": {}, \"torch_dtype\": \"float16\"}}\n",
                      h, ffn, layers, vocab));
      !s.ok()) {
    return s;
  }
  return store::WriteSafetensors(env, JoinPath(dir, "model.safetensors"), std::move(tensors),
                                 {{"format", "pt"}});
}

// The bench store under `data` holding the Llama checkpoint `name` of about `gib` GiB:
// the checkpoint is written to `ckpt` and saved into the store on the first run, and
// reused by later runs.
inline absl::StatusOr<std::unique_ptr<store::Store>> OpenStoreWithLlama(
    const std::string& data, const std::string& ckpt, const std::string& name, double gib) {
  Env* env = Env::Default();
  if (!env->FileExists(JoinPath(ckpt, "model.safetensors"))) {
    std::printf("writing a %.2f GiB fp16 checkpoint to %s ...\n", gib, ckpt.c_str());
    absl::Status s = MakeLlamaCheckpoint(ckpt, gib, LlamaShape{});
    if (!s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<store::Store>> store =
      store::Store::Open({.root = JoinPath(data, "store")});
  if (!store.ok()) return store.status();
  if (!(*store)->GetManifest(name).ok()) {
    std::printf("saving it into the bench store ...\n");
    absl::StatusOr<store::Manifest> saved = (*store)->Save(ckpt, name);
    if (!saved.ok()) return saved.status();
  }
  return store;
}

// Evicts the model's files from the page cache (posix_fadvise DONTNEED) before a cold
// figure; as root it also syncs and drops the whole page cache, so no other file's
// pages are in the way either.
inline absl::Status DropCaches(const loader::ModelSource& source) {
  absl::Status s = loader::DropFromPageCache(source);
  if (!s.ok()) return s;
  if (::geteuid() == 0) {
    ::sync();
    int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd >= 0) {
      (void)!::write(fd, "1", 1);
      ::close(fd);
    }
  }
  return absl::OkStatus();
}

// "--flag value" command lines of the benches:
//   for (bench::FlagReader r(argc, argv, "bench_x"); r.Next();) {
//     if (r.Is("--runs")) runs = std::stoi(r.Value()); else r.Unknown();
//   }
// A flag without its value, or one no branch took, ends the bench with a line naming it.
class FlagReader {
 public:
  FlagReader(int argc, char** argv, std::string program)
      : argc_(argc), argv_(argv), program_(std::move(program)) {}
  // Moves to the next flag; false after the last.
  bool Next() {
    if (++i_ >= argc_) return false;
    flag_ = argv_[i_];
    return true;
  }
  bool Is(const char* name) const { return flag_ == name; }
  const std::string& flag() const { return flag_; }
  // The value after the current flag.
  std::string Value() {
    if (i_ + 1 >= argc_) Fail(flag_ + " needs a value");
    return argv_[++i_];
  }
  [[noreturn]] void Unknown() const { Fail("unknown flag " + flag_); }
  [[noreturn]] void Fail(const std::string& message) const {
    std::fprintf(stderr, "%s: %s\n", program_.c_str(), message.c_str());
    std::exit(2);
  }

 private:
  const int argc_;
  char** const argv_;
  const std::string program_;
  int i_ = 0;
  std::string flag_;
};

}  // namespace loadstar::bench

#endif  // LOADSTAR_BENCH_BENCH_UTIL_H_
