// Device: memory that loaded weights live in, and the copies that fill it. One interface
// for emulated GPUs in shared host memory (HostDevice, loader/host_device.h) and real GPUs
// (CudaDevice, kernels/cuda_device.h), so the load pipeline, the worker and the tests are
// written once. It lives in base/ because both sides use it: kernels/ implements it and
// loader/ drives it, and kernels/ may include only base/ and quant/ (docs/design.md,
// "Layering"). The loader names it loader::Device too (loader/device.h).
//
// Contract:
//  1. Allocate returns memory another process on the same host can map through Export
//     (POSIX shared memory for host devices, cudaIpcMemHandle for CUDA).
//  2. CopyToDeviceAsync may return before the copy is done; `src` must stay valid and
//     unmodified until Wait(ticket) has returned for that copy (the pipeline reuses ring
//     slots only after that). Copies into disjoint ranges may run concurrently.
//  3. Every method is thread-safe.
//  4. Free of an allocation with copies in flight is a precondition violation; callers
//     Wait first.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loadstar {

enum class DeviceKind { kHost, kCuda };

// One allocation on a device. `ptr` is host-addressable for host devices and a device
// pointer for CUDA devices.
struct Allocation {
  uint64_t id = 0;
  void* ptr = nullptr;
  uint64_t size = 0;
};

// What a same-host consumer needs to map an allocation without copying it.
struct ExportedHandle {
  DeviceKind kind = DeviceKind::kHost;
  std::string shm_name;     // host: POSIX shared-memory object name, e.g. "/loadstar-123-4"
  // host: where the allocation starts in that object, a multiple of the page size (0 for
  // an object of its own; a pooled device's allocations share one object). A consumer maps
  // [offset, offset + size) and nothing else.
  uint64_t offset = 0;
  std::string ipc_handle;   // cuda: the 64 bytes of cudaIpcMemHandle_t
  std::string device_uuid;  // cuda: the GPU's UUID; host: empty
  uint64_t size = 0;
};

// Identifies one asynchronous copy; pass it to Device::Wait.
using CopyTicket = uint64_t;

class Device {
 public:
  virtual ~Device() = default;

  virtual DeviceKind kind() const = 0;
  // "host:0", "cuda:1".
  virtual std::string name() const = 0;
  virtual uint64_t total_memory() const = 0;
  virtual uint64_t free_memory() const = 0;

  virtual absl::StatusOr<Allocation> Allocate(uint64_t bytes) = 0;
  virtual absl::Status Free(const Allocation& allocation) = 0;

  // Starts copying `bytes` from host memory `src` to `dst` at `offset`.
  virtual absl::StatusOr<CopyTicket> CopyToDeviceAsync(const Allocation& dst, uint64_t offset,
                                                       const void* src, uint64_t bytes) = 0;
  // Blocks until the copy is complete; returns its error if it failed.
  virtual absl::Status Wait(CopyTicket ticket) = 0;
  // Synchronous copy out of the device (verification, ReadTensor).
  virtual absl::Status CopyToHost(void* dst, const Allocation& src, uint64_t offset,
                                  uint64_t bytes) = 0;

  virtual absl::StatusOr<ExportedHandle> Export(const Allocation& allocation) = 0;

  // True when `allocation.ptr` is host memory that is already mapped and resident, so the
  // load pipeline may read file bytes straight into it (one copy, no staging) at full
  // speed. False by default: device memory, or fresh memory whose first touch through a
  // mapping costs a page fault per page.
  virtual bool ReadsInPlace(const Allocation& allocation) const { return false; }

  // Before the load pipeline reads file bytes straight into [offset, offset+bytes) of a
  // host-addressable allocation that is not ReadsInPlace: makes that range writable,
  // allocating its pages where the memory needs it (fresh shared memory, whose first
  // touch past a full /dev/shm would SIGBUS), so that running out of memory is
  // RESOURCE_EXHAUSTED naming the device instead of a failed read. The default has
  // nothing to prepare (memory a plain store may touch).
  virtual absl::Status PrepareInPlaceWrite(const Allocation& allocation, uint64_t offset,
                                           uint64_t bytes) {
    return absl::OkStatus();
  }
};

}  // namespace loadstar
