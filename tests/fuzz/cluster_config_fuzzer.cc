// Fuzzes the controller and worker config parsers (daemon/cluster_config.h) with the same
// YAML. Invariants: bad input is INVALID_ARGUMENT (UNIMPLEMENTED for a tls: section, which
// this build refuses), never a crash; what parses satisfies the checks the daemons rely
// on (positive heartbeat interval below the timeout, a 4 KiB-multiple chunk size).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "daemon/cluster_config.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

void CheckError(const absl::Status& s) {
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument ||
                 s.code() == absl::StatusCode::kUnimplemented,
             "{}", s.ToString());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loadstar::daemon;
  std::string_view yaml(reinterpret_cast<const char*>(data), size);
  if (absl::StatusOr<ControllerConfig> c = ParseControllerConfig(yaml); !c.ok()) {
    CheckError(c.status());
  } else {
    FUZZ_CHECK(c->heartbeat_interval > 0 && c->heartbeat_timeout > c->heartbeat_interval &&
                   c->lease_ttl > 0,
               "{} {} {}", c->heartbeat_interval, c->heartbeat_timeout, c->lease_ttl);
  }
  if (absl::StatusOr<WorkerConfig> w = ParseWorkerConfig(yaml); !w.ok()) {
    CheckError(w.status());
  } else {
    FUZZ_CHECK(w->chunk_bytes > 0 && w->chunk_bytes % 4096 == 0, "chunk {}", w->chunk_bytes);
  }
  return 0;
}
