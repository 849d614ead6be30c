// Tensor checksums: xxh3-64 over each kChecksumChunkBytes piece of a tensor (manifest.h).
// The store computes them while writing; Verify and the loader recompute them.
//
// Thread safety: ChunkHasher is thread-compatible (one user at a time); the free
// functions are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "store/manifest.h"

struct XXH3_state_s;

namespace loadstar::store {

// xxh3-64 of `data` (seed 0), as stored in ManifestTensor::checksums.
uint64_t Checksum(std::string_view data);

// Number of checksum entries a tensor of `size` bytes has: ceil(size / chunk), at least 1.
uint64_t ChecksumCount(uint64_t size);

// Checksums of a whole tensor held in memory.
std::vector<uint64_t> ChunkChecksums(std::string_view tensor_bytes);

// Streams a tensor's bytes in pieces of any size and yields one checksum per
// kChecksumChunkBytes chunk, identical to ChunkChecksums of the concatenation.
class ChunkHasher {
 public:
  explicit ChunkHasher(uint64_t chunk_bytes = kChecksumChunkBytes);
  ~ChunkHasher();
  ChunkHasher(const ChunkHasher&) = delete;
  ChunkHasher& operator=(const ChunkHasher&) = delete;

  void Update(std::string_view data);
  // The checksums of everything passed to Update; resets the hasher for the next tensor.
  std::vector<uint64_t> Finish();

 private:
  uint64_t chunk_bytes_;
  uint64_t in_chunk_ = 0;
  XXH3_state_s* state_;
  std::vector<uint64_t> done_;
};

// "0123456789abcdef" form used in manifest JSON (16 lowercase hex digits).
std::string ChecksumToHex(uint64_t checksum);
bool ChecksumFromHex(std::string_view hex, uint64_t* checksum);

}  // namespace loadstar::store
