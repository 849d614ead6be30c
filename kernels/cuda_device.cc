#include "kernels/cuda_device.h"

#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_status.h"

namespace loadstar::kernels {
namespace {

std::string FormatUuid(const cudaUUID_t& uuid) {
  const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
  char out[64];
  std::snprintf(out, sizeof(out),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                b[12], b[13], b[14], b[15]);
  return out;
}

}  // namespace

absl::StatusOr<int> UsableGpuCount() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return NoUsableGpu(error);
  }
  if (count < 1) return NoUsableGpu(cudaErrorNoDevice);
  return count;
}

absl::StatusOr<std::unique_ptr<CudaDevice>> CudaDevice::Create(const Options& options) {
  if (options.copy_lanes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("copy_lanes must be >= 1, got ", options.copy_lanes));
  }
  auto count = UsableGpuCount();
  if (!count.ok()) return count.status();
  if (options.ordinal < 0 || options.ordinal >= *count) {
    return absl::InvalidArgumentError(absl::StrCat("no CUDA device ", options.ordinal, " (",
                                                   *count, " visible)"));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options.ordinal));
  cudaDeviceProp prop;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options.ordinal));
  std::vector<cudaStream_t> streams;
  for (int i = 0; i < options.copy_lanes; ++i) {
    cudaStream_t s = nullptr;
    const cudaError_t error = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (error != cudaSuccess) {
      for (cudaStream_t made : streams) CUDA_IGNORE_ERROR(cudaStreamDestroy(made));
      CUDA_RETURN_IF_ERROR(error);
    }
    streams.push_back(s);
  }
  return std::unique_ptr<CudaDevice>(new CudaDevice(
      options, static_cast<uint64_t>(prop.totalGlobalMem), FormatUuid(prop.uuid),
      std::move(streams)));
}

CudaDevice::CudaDevice(const Options& options, uint64_t total_memory, std::string uuid,
                       std::vector<cudaStream_t> streams)
    : options_(options),
      total_memory_(total_memory),
      uuid_(std::move(uuid)),
      streams_(std::move(streams)) {}

CudaDevice::~CudaDevice() {
  CUDA_IGNORE_ERROR(cudaSetDevice(options_.ordinal));
  absl::MutexLock lock(&mu_);
  for (auto& [ticket, event] : pending_) {
    CUDA_IGNORE_ERROR(cudaEventSynchronize(event));
    CUDA_IGNORE_ERROR(cudaEventDestroy(event));
  }
  for (cudaStream_t s : streams_) {
    CUDA_IGNORE_ERROR(cudaStreamSynchronize(s));
    CUDA_IGNORE_ERROR(cudaStreamDestroy(s));
  }
  for (auto& [id, allocation] : allocations_) CUDA_IGNORE_ERROR(cudaFree(allocation.ptr));
}

std::string CudaDevice::name() const { return absl::StrCat("cuda:", options_.ordinal); }

uint64_t CudaDevice::free_memory() const {
  size_t free_bytes = 0, total = 0;
  if (cudaSetDevice(options_.ordinal) != cudaSuccess ||
      cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
    static_cast<void>(cudaGetLastError());  // reported as 0 free bytes, not to the next call
    return 0;
  }
  return free_bytes;
}

absl::StatusOr<Allocation> CudaDevice::Allocate(uint64_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("cannot allocate 0 bytes");
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.ordinal));
  void* ptr = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr, bytes));
  absl::MutexLock lock(&mu_);
  Allocation allocation{next_allocation_id_++, ptr, bytes};
  allocations_[allocation.id] = allocation;
  return allocation;
}

absl::Status CudaDevice::Free(const Allocation& allocation) {
  {
    absl::MutexLock lock(&mu_);
    auto it = allocations_.find(allocation.id);
    if (it == allocations_.end() || it->second.ptr != allocation.ptr) {
      return absl::NotFoundError(
          absl::StrCat("no allocation ", allocation.id, " on ", name()));
    }
    allocations_.erase(it);
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.ordinal));
  CUDA_RETURN_IF_ERROR(cudaFree(allocation.ptr));
  return absl::OkStatus();
}

absl::Status CudaDevice::CheckRange(const Allocation& allocation, uint64_t offset,
                                    uint64_t bytes) const {
  auto it = allocations_.find(allocation.id);
  if (it == allocations_.end() || it->second.ptr != allocation.ptr) {
    return absl::NotFoundError(absl::StrCat("no allocation ", allocation.id, " on ", name()));
  }
  const uint64_t size = it->second.size;
  if (offset > size || bytes > size - offset) {
    return absl::OutOfRangeError(absl::StrCat("range [", offset, ", ", offset + bytes,
                                              ") outside allocation of ", size, " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<CopyTicket> CudaDevice::CopyToDeviceAsync(
    const Allocation& dst, uint64_t offset, const void* src, uint64_t bytes) {
  if (src == nullptr && bytes > 0) return absl::InvalidArgumentError("null copy source");
  cudaStream_t stream;
  {
    absl::MutexLock lock(&mu_);
    absl::Status s = CheckRange(dst, offset, bytes);
    if (!s.ok()) return s;
    stream = streams_[next_lane_++ % streams_.size()];
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.ordinal));
  cudaEvent_t event = nullptr;
  CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  cudaError_t error = cudaSuccess;
  if (bytes > 0) {
    error = cudaMemcpyAsync(static_cast<char*>(dst.ptr) + offset, src, bytes,
                            cudaMemcpyHostToDevice, stream);
  }
  if (error == cudaSuccess) error = cudaEventRecord(event, stream);
  if (error != cudaSuccess) {
    CUDA_IGNORE_ERROR(cudaEventDestroy(event));
    CUDA_RETURN_IF_ERROR(error);
  }
  absl::MutexLock lock(&mu_);
  const CopyTicket ticket = next_ticket_++;
  pending_[ticket] = event;
  return ticket;
}

absl::Status CudaDevice::Wait(CopyTicket ticket) {
  cudaEvent_t event;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(ticket);
    if (it == pending_.end()) {
      return absl::NotFoundError(absl::StrCat("no copy ", ticket, " pending on ", name()));
    }
    event = it->second;
    pending_.erase(it);
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.ordinal));
  const cudaError_t error = cudaEventSynchronize(event);
  CUDA_IGNORE_ERROR(cudaEventDestroy(event));
  CUDA_RETURN_IF_ERROR(error);
  return absl::OkStatus();
}

absl::Status CudaDevice::CopyToHost(void* dst, const Allocation& src, uint64_t offset,
                                    uint64_t bytes) {
  {
    absl::MutexLock lock(&mu_);
    absl::Status s = CheckRange(src, offset, bytes);
    if (!s.ok()) return s;
  }
  if (bytes == 0) return absl::OkStatus();
  if (dst == nullptr) return absl::InvalidArgumentError("null copy destination");
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.ordinal));
  // The copy lanes are non-blocking streams, which the legacy stream of cudaMemcpy does not
  // wait for: finish every copy enqueued so far, or this could read bytes still in flight.
  for (cudaStream_t s : streams_) CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
  CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, static_cast<const char*>(src.ptr) + offset, bytes,
                                  cudaMemcpyDeviceToHost));
  return absl::OkStatus();
}

absl::StatusOr<ExportedHandle> CudaDevice::Export(const Allocation& allocation) {
  {
    absl::MutexLock lock(&mu_);
    absl::Status s = CheckRange(allocation, 0, 0);
    if (!s.ok()) return s;
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.ordinal));
  cudaIpcMemHandle_t handle;
  CUDA_RETURN_IF_ERROR(cudaIpcGetMemHandle(&handle, allocation.ptr));
  ExportedHandle out;
  out.kind = DeviceKind::kCuda;
  out.ipc_handle.assign(reinterpret_cast<const char*>(&handle), sizeof(handle));
  out.device_uuid = uuid_;
  out.size = allocation.size;
  return out;
}

absl::StatusOr<std::vector<std::unique_ptr<Device>>> CreateCudaDevices(int copy_lanes) {
  auto count = UsableGpuCount();
  if (!count.ok()) return count.status();
  std::vector<std::unique_ptr<Device>> devices;
  for (int i = 0; i < *count; ++i) {
    auto device = CudaDevice::Create({.ordinal = i, .copy_lanes = copy_lanes});
    if (!device.ok()) return device.status();
    devices.push_back(std::move(device).value());
  }
  return devices;
}

}  // namespace loadstar::kernels
