// Writes the files of one model directory (SPEC §4 "loadstar layout", manifest.h): data
// files with every tensor 4 KiB-aligned and zero padding between tensors, per-chunk xxh3
// checksums computed while the bytes pass through, and manifest.json, each fsynced.
//
// Data files are written with O_DIRECT where the filesystem allows it (OpenOptions; the
// tail of a file goes through the page cache, see WritableFile::Append), in aligned
// blocks of kWriteBlockBytes, by a write-behind thread: the caller's thread fills and
// hashes block i+1 (reading the source) while block i is written, kWriteBuffers blocks in
// all, so one write is in flight at a time. A save does not fill the page cache with
// the copy (which would evict the source and everything else), and the fsync before
// the rename has only the tail left to flush.
//
// This is the non-atomic layer: it writes into an existing empty directory and leaves it
// half-written on error. Store::Save and Store::WriteVariant write into a temp directory
// with it and rename the result into place; use those unless you manage atomicity
// yourself.
//
// Thread safety: free functions; concurrent calls on different directories are safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "store/manifest.h"
#include "store/tensor.h"

namespace loadstar::store {

// Called as bytes are written: `done` of `total` tensor bytes, and the tensor being
// written. May be empty.
using ProgressCallback =
    std::function<void(uint64_t done, uint64_t total, std::string_view tensor)>;

// Data files are split so that none grows past this, except that one tensor is never
// split across files.
inline constexpr uint64_t kMaxDataFileBytes = 4ull << 30;

// Bytes per read and per filler call of copies (Verify, the safetensors writer); large so
// a multi-GiB file streams at disk speed.
inline constexpr size_t kCopyBufferBytes = 32ull << 20;

// WriteModelDir's data-file writes: blocks of this many bytes (a multiple of
// kDirectIoAlignment), kWriteBuffers of them (one filling, one writing, one queued).
inline constexpr size_t kWriteBlockBytes = 32ull << 20;
inline constexpr size_t kWriteBuffers = 3;

// Name of the i-th data file: "data-00000.bin".
std::string DataFileName(size_t index);

// Splits `tensors` (in order) into groups whose aligned size stays under `max_file_bytes`.
std::vector<std::vector<TensorInput>> GroupBySize(std::vector<TensorInput> tensors,
                                                  uint64_t max_file_bytes = kMaxDataFileBytes);

// Writes one data file per non-empty group (tensors in group order) into `dir`, then
// `manifest_fields` completed with files and tensors as manifest.json. Tensor names must
// be unique. Returns the manifest written. Errors: InvalidArgument for a bad spec
// (duplicate name, bad shape, filler size mismatch), the filler's own error, or the Env's.
absl::StatusOr<Manifest> WriteModelDir(Env* env, const std::string& dir,
                                       Manifest manifest_fields,
                                       std::vector<std::vector<TensorInput>> groups,
                                       const ProgressCallback& progress = {});

// Creates `path`, writes `data`, fsyncs and closes it (no rename: for files inside a
// temp directory that is renamed as a whole).
absl::Status WriteFileDurably(Env* env, const std::string& path, std::string_view data);

}  // namespace loadstar::store
