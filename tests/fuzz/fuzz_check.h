// FUZZ_CHECK(cond, fmt, args...): a fuzzer's invariant. On failure it prints what broke
// (libFuzzer keeps stderr with the reproducer) and aborts, which libFuzzer reports as a
// crash. Fuzz targets only: the daemon itself never aborts on input.
#pragma once

#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#define FUZZ_CHECK(cond, ...)                                                        \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s\n  %s\n", __FILE__,       \
                   __LINE__, #cond, fmt::format(__VA_ARGS__).c_str());               \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)
