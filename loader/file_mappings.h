// FileMappings: read-only mappings of store files, kept by a LoadPipeline across loads.
//
// Why: a warm load into resident memory (a worker's pooled device) is a copy out of the
// page cache plus a hash of every byte. pread copies into the destination with ordinary
// stores (each destination line is read before it is written) and the hash then reads the
// destination again. Through a mapping the loader hashes each piece where it lies in the
// page cache and copies it with streaming stores (base/streaming_copy.h): memory is read
// once and written once. Making a mapping's page tables costs about a quarter of that
// copy (1.2 GB: 29 ms to populate, 16 ms to unmap, on one core), so a mapping is kept for
// the next load of the same file. Measured (1.2 GB cached, two threads, pre-faulted
// destination, 2026-12-04): pread + hash 8.1-8.7 GB/s; a new mapping per load 9.7-10.1;
// a kept mapping 13.2-14.7 (glibc memcpy 12.4-13.4, streaming copy 16.4-18.1).
//
// A mapping is used only while the open file is the one mapped (device, inode, size,
// modification time): store files are never rewritten in place (a save renames a new
// directory into place), so a new identity means a new file, mapped anew. Prune (run by
// every Acquire) unmaps mappings whose path names another file or none, so a deleted
// model's disk space is not held past the next load. Mapped bytes are capped, least
// recently used first out; page tables cost 2 MiB per GiB mapped. A mapping in use by a
// load stays valid until that load drops its reference.
//
// Trap: a file truncated in place while mapped makes reads past its new end raise SIGBUS,
// as with any mmap-based loader (safetensors); loadstar never truncates a store file.
// Pages not in the page cache are read through MADV_POPULATE_READ before they are
// touched (LoadPipeline), so a disk error is an error code there, not a SIGBUS.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "base/env.h"

namespace loadstar::loader {

struct FileIdentity {
  uint64_t device = 0;
  uint64_t inode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileIdentity&) const = default;
};

// One whole-file read-only mapping; unmapped when the last reference goes.
class FileMapping {
 public:
  FileMapping(const char* data, uint64_t size) : data_(data), size_(size) {}
  ~FileMapping();
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;
  const char* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  const char* data_;
  uint64_t size_;
};

class FileMappings {
 public:
  // At most `max_bytes` mapped (0 maps nothing).
  explicit FileMappings(uint64_t max_bytes) : max_bytes_(max_bytes) {}

  // The kept mapping of `file` (a POSIX file: fd() >= 0, not O_DIRECT), made if needed;
  // nullptr when it has no descriptor, is empty, is larger than the cap, or mmap fails.
  // `*made` is set when this call made it (its page tables are empty).
  std::shared_ptr<const FileMapping> Acquire(const RandomAccessFile& file, bool* made);

  // Unmaps the kept mappings whose path no longer names the file mapped.
  void Prune();

  uint64_t mapped_bytes() const;
  size_t size() const;

 private:
  struct Entry {
    std::string path;
    FileIdentity identity;
    std::shared_ptr<const FileMapping> mapping;
  };
  // Moves the stale entries' mappings into `dropped` (unmapped by the caller after the lock).
  void PruneLocked(std::vector<std::shared_ptr<const FileMapping>>* dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t max_bytes_;
  mutable absl::Mutex mu_;
  std::list<Entry> entries_ ABSL_GUARDED_BY(mu_);  // most recently used first
  uint64_t mapped_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// The identity of the open descriptor `fd`, or of the file at `path`; false when it
// cannot be read (no such file).
bool IdentityOfDescriptor(int fd, FileIdentity* identity);
bool IdentityOfPath(const std::string& path, FileIdentity* identity);

}  // namespace loadstar::loader
