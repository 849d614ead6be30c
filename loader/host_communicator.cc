#include "loader/host_communicator.h"

#include <algorithm>
#include <atomic>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace loadstar::loader {

namespace ci = communicator_internal;

absl::StatusOr<std::unique_ptr<HostCommunicator>> HostCommunicator::Create(
    const std::vector<Device*>& devices) {
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i] == nullptr || devices[i]->kind() != DeviceKind::kHost) {
      return absl::InvalidArgumentError(absl::StrCat(
          "HostCommunicator needs host devices; rank ", i, " is ",
          devices[i] == nullptr ? std::string("null") : devices[i]->name()));
    }
  }
  Options options;
  options.num_ranks = static_cast<int>(devices.size());
  return Create(options);
}

absl::StatusOr<std::unique_ptr<HostCommunicator>> HostCommunicator::Create(
    const Options& options) {
  if (options.num_ranks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("HostCommunicator needs at least one rank, got ", options.num_ranks));
  }
  Options o = options;
  if (o.num_threads <= 0) {
    o.num_threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
  }
  return std::unique_ptr<HostCommunicator>(new HostCommunicator(o));
}

namespace {

// Copies `bytes` to `dst`, first installing the page-table entries of the whole pages
// inside the destination in one batch (MADV_POPULATE_WRITE): a fresh host-device
// allocation is shared memory mapped page by page on first touch (~1 GB/s through
// faults here), which would make a device-to-device copy slower than the host path that
// fills the same memory with pwrite. Pages the range only partly covers just fault; a
// kernel without MADV_POPULATE_WRITE (before 5.14) faults as before.
void CopyPopulated(void* dst, const void* src, uint64_t bytes) {
  if (bytes >= (64u << 10)) {
    static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    uintptr_t lo = (reinterpret_cast<uintptr_t>(dst) + page - 1) / page * page;
    uintptr_t hi = (reinterpret_cast<uintptr_t>(dst) + bytes) / page * page;
    if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE);
  }
  std::memcpy(dst, src, bytes);
}

}  // namespace

void HostCommunicator::Run(const std::vector<Transfer>& transfers) {
  uint64_t total = 0;
  for (const Transfer& t : transfers) total += t.bytes;
  if (total < options_.parallel_threshold || options_.num_threads == 1) {
    for (const Transfer& t : transfers) {
      if (t.bytes > 0) CopyPopulated(t.dst, t.src, t.bytes);
    }
    return;
  }
  // Cut every transfer into chunks of about total / (4 * threads), at least 1 MiB, and
  // let the threads pull chunks from a shared counter.
  const uint64_t chunk =
      std::max<uint64_t>(1ull << 20, total / (4ull * static_cast<uint64_t>(options_.num_threads)));
  std::vector<Transfer> chunks;
  for (const Transfer& t : transfers) {
    for (uint64_t off = 0; off < t.bytes; off += chunk) {
      chunks.push_back({static_cast<char*>(t.dst) + off,
                        static_cast<const char*>(t.src) + off, std::min(chunk, t.bytes - off)});
    }
  }
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next.fetch_add(1); i < chunks.size(); i = next.fetch_add(1)) {
      CopyPopulated(chunks[i].dst, chunks[i].src, chunks[i].bytes);
    }
  };
  const int helpers =
      std::min<int>(options_.num_threads, static_cast<int>(chunks.size())) - 1;
  std::vector<std::thread> threads;
  threads.reserve(helpers);
  for (int i = 0; i < helpers; ++i) threads.emplace_back(worker);
  worker();
  for (std::thread& t : threads) t.join();
}

absl::Status HostCommunicator::Broadcast(int root, std::span<const DeviceSpan> buffers,
                                         uint64_t bytes) {
  absl::Status s = ci::CheckBroadcast(root, buffers, bytes, size());
  if (!s.ok()) return s;
  std::vector<Transfer> transfers;
  for (int r = 0; r < size(); ++r) {
    if (r == root || buffers[r].data == buffers[root].data || bytes == 0) continue;
    if (ci::Overlaps(buffers[r].data, bytes, buffers[root].data, bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("broadcast buffer of rank ", r, " overlaps the root's"));
    }
    transfers.push_back({buffers[r].data, buffers[root].data, bytes});
  }
  absl::MutexLock lock(&mu_);
  Run(transfers);
  return absl::OkStatus();
}

absl::Status HostCommunicator::Copy(const DeviceSpan& src, const DeviceSpan& dst) {
  absl::Status s = ci::CheckCopy(src, dst, size());
  if (!s.ok()) return s;
  if (src.size == 0 || src.data == dst.data) return absl::OkStatus();
  if (ci::Overlaps(src.data, src.size, dst.data, src.size)) {
    return absl::InvalidArgumentError("copy source and destination overlap");
  }
  absl::MutexLock lock(&mu_);
  Run({{dst.data, src.data, src.size}});
  return absl::OkStatus();
}

absl::Status HostCommunicator::Scatter(const DeviceSpan& src, std::span<const DeviceSpan> dsts,
                                       uint64_t bytes_each) {
  absl::Status s = ci::CheckScatter(src, dsts, bytes_each, size());
  if (!s.ok()) return s;
  std::vector<Transfer> transfers;
  for (int r = 0; r < size() && bytes_each > 0; ++r) {
    const char* slice = static_cast<const char*>(src.data) + r * bytes_each;
    if (dsts[r].data == slice) continue;
    if (ci::Overlaps(dsts[r].data, bytes_each, src.data, size() * bytes_each)) {
      return absl::InvalidArgumentError(
          absl::StrCat("scatter destination of rank ", r, " overlaps the source"));
    }
    transfers.push_back({dsts[r].data, slice, bytes_each});
  }
  absl::MutexLock lock(&mu_);
  Run(transfers);
  return absl::OkStatus();
}

}  // namespace loadstar::loader
