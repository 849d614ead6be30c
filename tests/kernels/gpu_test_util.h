// Shared by the GPU tests: skip (not fail) where no GPU is usable, e.g. CI machines
// without a driver (cudaGetDeviceCount returns error 35 there).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_device.h"

namespace loadstar::kernels {

// `n` bytes that differ with `seed` and do not repeat with a short period, for byte-equal
// round trips through device memory.
inline std::vector<uint8_t> BytePattern(uint64_t n, int seed) {
  std::vector<uint8_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 13 + seed * 101 + (i >> 11));
  return v;
}

}  // namespace loadstar::kernels

// Skips the current test with "no usable GPU: <reason>" when there is no GPU.
#define SKIP_WITHOUT_GPU()                                                           \
  do {                                                                               \
    auto loadstar_gpu_count_ = ::loadstar::kernels::UsableGpuCount();                \
    if (!loadstar_gpu_count_.ok()) {                                                 \
      GTEST_SKIP() << std::string(loadstar_gpu_count_.status().message());           \
    }                                                                                \
  } while (0)

// Skips unless at least `n` GPUs are usable.
#define SKIP_WITHOUT_GPUS(n)                                                         \
  do {                                                                               \
    auto loadstar_gpu_count_ = ::loadstar::kernels::UsableGpuCount();                \
    if (!loadstar_gpu_count_.ok()) {                                                 \
      GTEST_SKIP() << std::string(loadstar_gpu_count_.status().message());           \
    }                                                                                \
    if (*loadstar_gpu_count_ < (n)) {                                                \
      GTEST_SKIP() << "needs " << (n) << " GPUs, have " << *loadstar_gpu_count_;     \
    }                                                                                \
  } while (0)
