#include "store/checksum.h"

#include <xxhash.h>

#include <algorithm>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace loadstar::store {

uint64_t Checksum(std::string_view data) { return XXH3_64bits(data.data(), data.size()); }

uint64_t ChecksumCount(uint64_t size) {
  if (size == 0) return 1;
  return size / kChecksumChunkBytes + (size % kChecksumChunkBytes != 0 ? 1 : 0);
}

std::vector<uint64_t> ChunkChecksums(std::string_view tensor_bytes) {
  std::vector<uint64_t> sums;
  if (tensor_bytes.empty()) {
    sums.push_back(Checksum(tensor_bytes));
    return sums;
  }
  for (size_t pos = 0; pos < tensor_bytes.size(); pos += kChecksumChunkBytes) {
    sums.push_back(Checksum(tensor_bytes.substr(pos, kChecksumChunkBytes)));
  }
  return sums;
}

ChunkHasher::ChunkHasher(uint64_t chunk_bytes)
    : chunk_bytes_(chunk_bytes), state_(XXH3_createState()) {
  XXH3_64bits_reset(state_);
}

ChunkHasher::~ChunkHasher() { XXH3_freeState(state_); }

void ChunkHasher::Update(std::string_view data) {
  while (!data.empty()) {
    if (in_chunk_ == chunk_bytes_) {
      done_.push_back(XXH3_64bits_digest(state_));
      XXH3_64bits_reset(state_);
      in_chunk_ = 0;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(data.size(), chunk_bytes_ - in_chunk_));
    XXH3_64bits_update(state_, data.data(), n);
    in_chunk_ += n;
    data.remove_prefix(n);
  }
}

std::vector<uint64_t> ChunkHasher::Finish() {
  // The last (possibly partial, possibly empty for a 0-byte tensor) chunk.
  done_.push_back(XXH3_64bits_digest(state_));
  XXH3_64bits_reset(state_);
  in_chunk_ = 0;
  return std::exchange(done_, {});
}

std::string ChecksumToHex(uint64_t checksum) { return fmt::format("{:016x}", checksum); }

bool ChecksumFromHex(std::string_view hex, uint64_t* checksum) {
  if (hex.size() != 16) return false;
  uint64_t value = 0;
  for (char c : hex) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return false;
    }
    value = (value << 4) | static_cast<uint64_t>(digit);
  }
  *checksum = value;
  return true;
}

}  // namespace loadstar::store
