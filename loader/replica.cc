#include "loader/replica.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace loadstar::loader {
namespace {

// Frees what a failed copy allocated.
void FreeAll(const std::vector<Device*>& devices, std::vector<Allocation>& allocations) {
  for (size_t d = 0; d < allocations.size(); ++d) {
    if (allocations[d].ptr != nullptr) devices[d]->Free(allocations[d]).IgnoreError();
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<LoadedModel>> CopyReplica(
    const LoadedModel& source, const std::vector<Device*>& devices,
    const std::vector<int>& source_ranks, const std::vector<int>& ranks, Communicator& comm,
    const CancellationToken* cancel, ReplicaCopyStats* stats, uint64_t piece_bytes) {
  const size_t n = static_cast<size_t>(source.num_devices());
  if (devices.size() != n || source_ranks.size() != n || ranks.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a replica of ", source.key(), " needs ", n, " devices and ranks; got ", devices.size(),
        " devices, ", source_ranks.size(), " source ranks, ", ranks.size(), " ranks"));
  }
  if (piece_bytes == 0) return absl::InvalidArgumentError("piece_bytes is 0");
  const auto start = std::chrono::steady_clock::now();
  std::vector<Allocation> allocations(n);
  uint64_t copied = 0;
  for (size_t d = 0; d < n; ++d) {
    const Allocation& src = source.allocation(d);
    if (src.size == 0) continue;
    absl::StatusOr<Allocation> a = devices[d]->Allocate(src.size);
    if (!a.ok()) {
      FreeAll(devices, allocations);
      return absl::Status(a.status().code(), absl::StrCat("replica of ", source.key(), ": ",
                                                          std::string(a.status().message())));
    }
    allocations[d] = *a;
  }
  for (size_t d = 0; d < n; ++d) {
    const Allocation& src = source.allocation(d);
    for (uint64_t off = 0; off < src.size; off += piece_bytes) {
      if (cancel != nullptr && cancel->cancelled()) {
        FreeAll(devices, allocations);
        return absl::CancelledError(absl::StrCat("replica of ", source.key(), " was cancelled"));
      }
      const uint64_t bytes = std::min(piece_bytes, src.size - off);
      absl::Status s = comm.Copy(
          DeviceSpan{source_ranks[d], static_cast<char*>(src.ptr) + off, bytes},
          DeviceSpan{ranks[d], static_cast<char*>(allocations[d].ptr) + off, bytes});
      if (!s.ok()) {
        FreeAll(devices, allocations);
        return absl::Status(s.code(), absl::StrCat("replica of ", source.key(), ": ",
                                                   std::string(s.message())));
      }
      copied += bytes;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (stats != nullptr) {
    stats->bytes = copied;
    stats->seconds = seconds;
    stats->gbps = seconds > 0 ? static_cast<double>(copied) / seconds / 1e9 : 0;
  }
  return std::make_unique<LoadedModel>(source.key(), devices, std::move(allocations),
                                       source.tensors());
}

}  // namespace loadstar::loader
