// DeviceBackend: everything a family of accelerator devices (today: CUDA, built as the
// module kernels/module/ -> libloadstar_cuda.so) supplies to the loader. The loader holds a
// registry of backends (loader/device_backends.h) and asks it for devices, communicators,
// staging memory and per-device quantizers; it never includes kernels/ headers nor links
// CUDA, so a loadstar built with CUDA starts without the CUDA libraries and runs on host
// devices where they are missing.
//
// Why in quant/: the backend hands out quant::TensorQuantizer objects, and kernels/ (which
// implements it) may include only base/ and quant/. The device, communicator and allocator
// interfaces it returns are base/'s.
//
// Contract:
//  1. A backend is created once per process and never destroyed (the module that holds its
//     code stays loaded); every method is thread-safe.
//  2. Usable() is cheap after the first call and never crashes: without a driver or a GPU
//     it is FailedPrecondition "no usable GPU: <reason>".
//  3. Devices, communicators and quantizers it returns may be passed back only to this
//     backend (CreateCommunicator, CreateQuantizer check and refuse others' devices).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/communicator.h"
#include "base/device.h"
#include "base/host_memory_allocator.h"
#include "quant/streaming.h"
#include "quant/tensor_quantizer.h"

namespace loadstar {

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  // "cuda". The device spec that selects it (loader::CreateDevices).
  virtual std::string name() const = 0;
  // The kind of every device it creates.
  virtual DeviceKind kind() const = 0;

  // OK when CreateDevices can succeed; else why not (rule 2).
  virtual absl::Status Usable() = 0;
  // One device per visible accelerator, in ordinal order.
  virtual absl::StatusOr<std::vector<std::unique_ptr<Device>>> CreateDevices() = 0;
  // A communicator over devices this backend created (rank r = devices[r]).
  virtual absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
      const std::vector<Device*>& devices) = 0;
  // Page-locked host memory for the staging ring and the host cache, from which copies to
  // these devices are DMA. Never null, never deleted.
  virtual HostMemoryAllocator* staging_allocator() = 0;

  // A quantizer for one tensor whose output goes to `device` (one this backend created),
  // quantizing on that device; the input never has to be resident there as a whole.
  // nullptr (and OK) when the backend cannot quantize this tensor (e.g. a Conv1D weight,
  // options.transpose_conv1d): the caller then quantizes on the CPU, with the same bits.
  virtual absl::StatusOr<std::unique_ptr<quant::TensorQuantizer>> CreateQuantizer(
      Device& device, const quant::StreamingQuantizer::Options& options) = 0;
};

}  // namespace loadstar
