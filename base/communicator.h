// Communicator: moves bytes between the devices of one worker, without a trip through the
// host. Ranks are indices 0..size()-1 into the worker's device list (the order given at
// construction). Two implementations: HostCommunicator (threads + memcpy over host-device
// allocations, loader/host_communicator.h) and NcclCommunicator (one NCCL communicator
// over the worker's GPUs, kernels/nccl_communicator.h). In base/ beside Device for the same
// reason: kernels/ implements it, loader/ creates and uses it (loader/communicator.h).
//
// Uses: replicas (read a model once from host into rank 0, Broadcast to the others), warm
// scale-out (Copy a resident instance device-to-device instead of re-reading the host),
// tensor-parallel shards (Scatter the per-rank slices of a tensor staged on one device).
//
// Contract:
//  1. Every call is synchronous for the caller: when it returns OK, every destination
//     holds the bytes (the NCCL implementation synchronizes its streams before returning).
//     On error, destinations hold unspecified bytes.
//  2. Buffers are device memory of the rank named (host-addressable for host devices,
//     device pointers for CUDA). A span's `size` is the capacity the caller vouches for;
//     a call that would read or write past it is InvalidArgument, as are out-of-range
//     ranks, a buffer list whose length is not size(), and null pointers with bytes > 0.
//     Zero bytes is a no-op returning OK.
//  3. Destinations must not overlap sources or each other (InvalidArgument where the
//     implementation can see it, i.e. same-rank ranges); a destination equal to its
//     source (the root's own buffer in Broadcast) is skipped.
//  4. Thread-safe: calls from several threads are serialized in arrival order (NCCL needs
//     every rank to see collectives in the same order; one process drives all ranks).
//     The buffers must not be freed or written by others while a call runs.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/device.h"

namespace loadstar {

// `size` bytes of device memory on device `rank`.
struct DeviceSpan {
  int rank = 0;
  void* data = nullptr;
  uint64_t size = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  // "host", "nccl".
  virtual std::string name() const = 0;
  // Number of ranks (devices).
  virtual int size() const = 0;

  // Copies the first `bytes` of buffers[root] into buffers[r] for every r != root.
  // REQUIRES: buffers.size() == size(); buffers[r].rank == r; each span's size >= bytes.
  virtual absl::Status Broadcast(int root, std::span<const DeviceSpan> buffers,
                                 uint64_t bytes) = 0;

  // Copies all of `src` into the start of `dst` (src.size bytes; dst.size >= src.size).
  // The ranks may be equal (a device-local copy).
  virtual absl::Status Copy(const DeviceSpan& src, const DeviceSpan& dst) = 0;

  // Rank r receives bytes [r * bytes_each, (r + 1) * bytes_each) of `src` (on src.rank,
  // the root) into dsts[r]; the root's own slice is copied too, unless dsts[root] is the
  // matching slice of src itself.
  // REQUIRES: src.size >= size() * bytes_each; dsts.size() == size(); dsts[r].rank == r;
  // dsts[r].size >= bytes_each.
  virtual absl::Status Scatter(const DeviceSpan& src, std::span<const DeviceSpan> dsts,
                               uint64_t bytes_each) = 0;
};

// Argument checks shared by the implementations (contract rule 2 and 3); OK or
// InvalidArgument naming the offending rank.
namespace communicator_internal {

inline absl::Status CheckRank(int rank, int size, const char* what) {
  if (rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " rank ", rank, " out of range [0, ", size, ")"));
  }
  return absl::OkStatus();
}

inline absl::Status CheckSpan(const DeviceSpan& span, uint64_t bytes, int size,
                              const char* what) {
  absl::Status s = CheckRank(span.rank, size, what);
  if (!s.ok()) return s;
  if (bytes > 0 && span.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, " on rank ", span.rank, " is null"));
  }
  if (span.size < bytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " on rank ", span.rank, " holds ",
                                                   span.size, " bytes, needs ", bytes));
  }
  return absl::OkStatus();
}

// True when [a, a+n) and [b, b+n) share a byte.
inline bool Overlaps(const void* a, uint64_t an, const void* b, uint64_t bn) {
  auto x = reinterpret_cast<uintptr_t>(a);
  auto y = reinterpret_cast<uintptr_t>(b);
  return an > 0 && bn > 0 && x < y + bn && y < x + an;
}

// `spans` holds one span per rank, spans[r] on rank r, each with room for `bytes`.
inline absl::Status CheckOnePerRank(std::span<const DeviceSpan> spans, uint64_t bytes, int size,
                                    const char* what) {
  if (spans.size() != static_cast<size_t>(size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "s: ", size, " needed (one per rank), got ", spans.size()));
  }
  for (int r = 0; r < size; ++r) {
    if (spans[r].rank != r) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", r, " names rank ", spans[r].rank));
    }
    absl::Status s = CheckSpan(spans[r], bytes, size, what);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

inline absl::Status CheckBroadcast(int root, std::span<const DeviceSpan> buffers,
                                   uint64_t bytes, int size) {
  absl::Status s = CheckRank(root, size, "broadcast root");
  if (!s.ok()) return s;
  return CheckOnePerRank(buffers, bytes, size, "broadcast buffer");
}

inline absl::Status CheckCopy(const DeviceSpan& src, const DeviceSpan& dst, int size) {
  absl::Status s = CheckSpan(src, src.size, size, "copy source");
  if (!s.ok()) return s;
  s = CheckSpan(dst, src.size, size, "copy destination");
  if (!s.ok()) return s;
  if (src.rank == dst.rank && src.data != dst.data &&
      Overlaps(src.data, src.size, dst.data, src.size)) {
    return absl::InvalidArgumentError("copy source and destination overlap");
  }
  return absl::OkStatus();
}

inline absl::Status CheckScatter(const DeviceSpan& src, std::span<const DeviceSpan> dsts,
                                 uint64_t bytes_each, int size) {
  absl::Status s = CheckSpan(src, static_cast<uint64_t>(size) * bytes_each, size,
                             "scatter source");
  if (!s.ok()) return s;
  return CheckOnePerRank(dsts, bytes_each, size, "scatter destination");
}

}  // namespace communicator_internal

}  // namespace loadstar
