#include "loader/file_mappings.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <vector>

namespace loadstar::loader {
namespace {

FileIdentity IdentityOf(const struct stat& st) {
  return FileIdentity{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                      static_cast<uint64_t>(st.st_size),
                      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

}  // namespace

bool IdentityOfDescriptor(int fd, FileIdentity* identity) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return false;
  *identity = IdentityOf(st);
  return true;
}

bool IdentityOfPath(const std::string& path, FileIdentity* identity) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  *identity = IdentityOf(st);
  return true;
}

FileMapping::~FileMapping() { ::munmap(const_cast<char*>(data_), size_); }

std::shared_ptr<const FileMapping> FileMappings::Acquire(const RandomAccessFile& file,
                                                         bool* made) {
  *made = false;
  FileIdentity identity;
  if (file.fd() < 0 || file.direct() || !IdentityOfDescriptor(file.fd(), &identity) ||
      identity.size == 0 || identity.size > max_bytes_) {
    return nullptr;
  }
  // Mappings dropped here are unmapped after the lock is released (munmap can take ms).
  std::vector<std::shared_ptr<const FileMapping>> dropped;
  std::shared_ptr<const FileMapping> result;
  {
    absl::MutexLock lock(&mu_);
    PruneLocked(&dropped);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->path != file.path()) continue;
      if (it->identity == identity) {
        entries_.splice(entries_.begin(), entries_, it);
        return entries_.front().mapping;
      }
      mapped_bytes_ -= it->identity.size;
      dropped.push_back(std::move(it->mapping));
      entries_.erase(it);
      break;
    }
    while (!entries_.empty() && mapped_bytes_ + identity.size > max_bytes_) {
      mapped_bytes_ -= entries_.back().identity.size;
      dropped.push_back(std::move(entries_.back().mapping));
      entries_.pop_back();
    }
    void* data = ::mmap(nullptr, identity.size, PROT_READ, MAP_SHARED, file.fd(), 0);
    if (data == MAP_FAILED) return nullptr;
    result = std::make_shared<const FileMapping>(static_cast<const char*>(data), identity.size);
    entries_.push_front(Entry{file.path(), identity, result});
    mapped_bytes_ += identity.size;
  }
  *made = true;
  return result;
}

void FileMappings::Prune() {
  std::vector<std::shared_ptr<const FileMapping>> dropped;
  absl::MutexLock lock(&mu_);
  PruneLocked(&dropped);
}

void FileMappings::PruneLocked(std::vector<std::shared_ptr<const FileMapping>>* dropped) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    FileIdentity now;
    if (IdentityOfPath(it->path, &now) && now == it->identity) {
      ++it;
      continue;
    }
    mapped_bytes_ -= it->identity.size;
    dropped->push_back(std::move(it->mapping));
    it = entries_.erase(it);
  }
}

uint64_t FileMappings::mapped_bytes() const {
  absl::MutexLock lock(&mu_);
  return mapped_bytes_;
}

size_t FileMappings::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace loadstar::loader
