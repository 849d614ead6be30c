// CopyReplica: a second instance of a resident model, copied device-to-device by the
// Communicator instead of read again from the host (SPEC §5 Communicator: warm
// scale-out). The replica gets allocations of its own, of the source's sizes, on the
// devices given (one per source device, possibly the same devices); each allocation is
// copied whole, padding included, so the replica is byte-identical to the source and its
// tensor table (offsets, quant-state annotations) is the source's. Nothing is shared:
// either may be freed, or leased by a consumer, without the other noticing.
//
// Failure: on any error (allocation, copy, cancellation) everything the replica
// allocated is freed before CopyReplica returns.
//
// Thread safety: the source must stay alive and unwritten during the call (the worker
// holds it by shared_ptr); Communicator calls are serialized by the communicator.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loader/communicator.h"
#include "loader/device.h"
#include "loader/load_pipeline.h"
#include "loader/loaded_model.h"

namespace loadstar::loader {

struct ReplicaCopyStats {
  uint64_t bytes = 0;  // allocation bytes copied
  double seconds = 0;
  double gbps = 0;     // bytes / seconds / 1e9
};

// `devices[d]` receives the copy of `source.allocation(d)`; `source_ranks[d]` and
// `ranks[d]` are the communicator ranks of the source's and the replica's device d.
// Copies go in pieces of `piece_bytes` so cancellation is noticed between them.
absl::StatusOr<std::unique_ptr<LoadedModel>> CopyReplica(
    const LoadedModel& source, const std::vector<Device*>& devices,
    const std::vector<int>& source_ranks, const std::vector<int>& ranks, Communicator& comm,
    const CancellationToken* cancel = nullptr, ReplicaCopyStats* stats = nullptr,
    uint64_t piece_bytes = 256ull << 20);

}  // namespace loadstar::loader
