#include "deploy/client/mapped_instance.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "deploy/client/cuda_ipc.h"

namespace loadstar::client {

namespace v1 = loadstar::v1;

absl::StatusOr<std::unique_ptr<MappedInstance>> MappedInstance::Map(
    const v1::InstanceHandle& handle) {
  std::unique_ptr<MappedInstance> m(new MappedInstance());
  m->handle_ = handle;
  for (const v1::MemoryHandle& a : m->handle_.allocations()) {
    Region r;
    r.kind = a.kind();
    r.size = a.size();
    if (a.kind() == "host") {
      int fd = ::shm_open(a.shm_name().c_str(), O_RDONLY, 0);
      if (fd < 0) {
        int err = errno;
        std::string why = fmt::format("shared memory {} of instance {}: {}", a.shm_name(),
                                      handle.instance_id(), std::strerror(err));
        if (err == ENOENT) {
          return absl::NotFoundError(why + " (is the worker on another host? read the tensors "
                                           "over ReadTensor instead)");
        }
        return absl::PermissionDeniedError(why);
      }
      // Exactly the allocation's range: a pooled device's allocations share one object.
      const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
      struct stat st;
      std::string bad;
      if (a.offset() % page != 0) {
        bad = fmt::format("its offset {} is not a multiple of the page size {}", a.offset(), page);
      } else if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < a.offset() ||
                 static_cast<uint64_t>(st.st_size) - a.offset() < r.size) {
        bad = fmt::format("it holds {} bytes, the handle says {} at offset {}",
                          static_cast<uint64_t>(st.st_size), r.size, a.offset());
      }
      if (!bad.empty()) {
        ::close(fd);
        return absl::InvalidArgumentError(fmt::format(
            "shared memory {} of instance {}: {}", a.shm_name(), handle.instance_id(), bad));
      }
      void* p = r.size == 0 ? nullptr
                            : ::mmap(nullptr, r.size, PROT_READ, MAP_SHARED, fd,
                                     static_cast<off_t>(a.offset()));
      int err = errno;
      ::close(fd);
      if (p == MAP_FAILED) {
        return absl::InternalError(fmt::format("mmap of {} ({} bytes at {}): {}", a.shm_name(),
                                               r.size, a.offset(), std::strerror(err)));
      }
      r.base = p;
    } else if (a.kind() == "cuda") {
      absl::StatusOr<void*> p = OpenCudaIpcHandle(a.ipc_handle(), a.device_uuid());
      if (!p.ok()) return p.status();
      r.base = *p;
    } else {
      return absl::InvalidArgumentError(
          fmt::format("instance {}: allocation kind '{}' is unknown", handle.instance_id(), a.kind()));
    }
    m->regions_[a.device()] = r;
  }
  for (const v1::TensorInfo& t : m->handle_.tensors()) {
    auto it = m->regions_.find(t.device());
    if (it == m->regions_.end() || t.offset() > it->second.size ||
        t.size() > it->second.size - t.offset()) {
      return absl::InvalidArgumentError(fmt::format(
          "instance {}: tensor '{}' ({} bytes at {}) lies outside the memory of its device {}",
          handle.instance_id(), t.name(), t.size(), t.offset(), t.device()));
    }
    TensorView v;
    v.info = &t;
    v.kind = it->second.kind;
    v.data = static_cast<const char*>(it->second.base) + t.offset();
    v.size = t.size();
    m->by_name_[t.name()] = m->tensors_.size();
    m->tensors_.push_back(v);
  }
  return m;
}

MappedInstance::~MappedInstance() {
  for (const auto& [device, r] : regions_) {
    if (r.base == nullptr) continue;
    if (r.kind == "host") {
      ::munmap(r.base, r.size);
    } else {
      CloseCudaIpcHandle(r.base).IgnoreError();
    }
  }
}

const TensorView* MappedInstance::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace loadstar::client
