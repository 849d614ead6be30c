#include "base/streaming_copy.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace loadstar {
namespace {

#if defined(__x86_64__)

// Each body copies whole 256-byte blocks from any source alignment to a 64-byte-aligned
// destination; the caller does the unaligned head and the tail with memcpy.
__attribute__((target("avx512f"))) void StreamBlocksAvx512(char* dst, const char* src,
                                                           size_t blocks) {
  for (size_t i = 0; i < blocks; ++i, dst += 256, src += 256) {
    __m512i a = _mm512_loadu_si512(src), b = _mm512_loadu_si512(src + 64),
            c = _mm512_loadu_si512(src + 128), d = _mm512_loadu_si512(src + 192);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst), a);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + 64), b);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + 128), c);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + 192), d);
  }
}

__attribute__((target("avx2"))) void StreamBlocksAvx2(char* dst, const char* src,
                                                      size_t blocks) {
  for (size_t i = 0; i < blocks; ++i, dst += 256, src += 256) {
    for (int k = 0; k < 256; k += 128) {
      __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k));
      __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k + 32));
      __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k + 64));
      __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k + 96));
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + k), a);
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + k + 32), b);
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + k + 64), c);
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + k + 96), d);
    }
  }
}

void StreamBlocksSse2(char* dst, const char* src, size_t blocks) {
  for (size_t i = 0; i < blocks * 16; ++i, dst += 16, src += 16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  }
}

using StreamBlocks = void (*)(char*, const char*, size_t);

struct Choice {
  StreamBlocks fn;
  const char* kind;
};

Choice Pick() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {StreamBlocksAvx512, "avx512"};
  if (__builtin_cpu_supports("avx2")) return {StreamBlocksAvx2, "avx2"};
  return {StreamBlocksSse2, "sse2"};
}

const Choice& Chosen() {
  static const Choice choice = Pick();
  return choice;
}

#endif  // __x86_64__

}  // namespace

void CopyAroundCache(void* dst_ptr, const void* src_ptr, size_t bytes) {
#if defined(__x86_64__)
  char* dst = static_cast<char*>(dst_ptr);
  const char* src = static_cast<const char*>(src_ptr);
  // Streaming stores need an aligned destination; below a few blocks they gain nothing.
  size_t head = (64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64;
  if (bytes < head + 1024) {
    std::memcpy(dst, src, bytes);
    return;
  }
  std::memcpy(dst, src, head);
  dst += head;
  src += head;
  bytes -= head;
  const size_t blocks = bytes / 256;
  Chosen().fn(dst, src, blocks);
  _mm_sfence();  // streaming stores are weakly ordered: publish them before returning
  std::memcpy(dst + blocks * 256, src + blocks * 256, bytes - blocks * 256);
#else
  std::memcpy(dst_ptr, src_ptr, bytes);
#endif
}

const char* CopyAroundCacheKind() {
#if defined(__x86_64__)
  return Chosen().kind;
#else
  return "memcpy";
#endif
}

}  // namespace loadstar
