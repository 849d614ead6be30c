#include "loader/pinned_ring.h"

#include "absl/strings/str_cat.h"
#include "base/env.h"

namespace loadstar::loader {

absl::StatusOr<std::unique_ptr<PinnedRing>> PinnedRing::Create(const Options& options) {
  if (options.slot_bytes == 0 || options.slot_bytes % kDirectIoAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring slot size ", options.slot_bytes, " is not a positive multiple of 4096"));
  }
  if (options.total_bytes == 0) {
    return absl::InvalidArgumentError("ring size must be positive");
  }
  uint64_t slot_bytes = options.slot_bytes;
  uint64_t count = options.total_bytes / slot_bytes;
  if (count == 0) {
    count = 1;
    slot_bytes = (options.total_bytes + kDirectIoAlignment - 1) / kDirectIoAlignment *
                 kDirectIoAlignment;
  }
  if (count > (1u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("ring of ", count, " slots is too many"));
  }
  HostMemoryAllocator* allocator =
      options.allocator != nullptr ? options.allocator : DefaultHostAllocator();
  void* base = allocator->Allocate(count * slot_bytes, kDirectIoAlignment);
  if (base == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate a ", count * slot_bytes, "-byte staging ring"));
  }
  return std::unique_ptr<PinnedRing>(new PinnedRing(allocator, static_cast<char*>(base),
                                                    static_cast<int>(count), slot_bytes));
}

PinnedRing::PinnedRing(HostMemoryAllocator* allocator, char* base, int slot_count,
                       uint64_t slot_bytes)
    : allocator_(allocator), base_(base), slot_count_(slot_count), slot_bytes_(slot_bytes) {
  for (int i = slot_count - 1; i >= 0; --i) free_.push_back(i);
}

PinnedRing::~PinnedRing() { allocator_->Free(base_); }

PinnedRing::Slot PinnedRing::SlotAt(int index) const {
  return Slot{index, base_ + static_cast<uint64_t>(index) * slot_bytes_, slot_bytes_};
}

PinnedRing::Slot PinnedRing::Acquire() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &PinnedRing::HasFree));
  int index = free_.back();
  free_.pop_back();
  return SlotAt(index);
}

std::optional<PinnedRing::Slot> PinnedRing::TryAcquire() {
  absl::MutexLock lock(&mu_);
  if (free_.empty()) return std::nullopt;
  int index = free_.back();
  free_.pop_back();
  return SlotAt(index);
}

void PinnedRing::Release(const Slot& slot) {
  absl::MutexLock lock(&mu_);
  free_.push_back(slot.index);
}

int PinnedRing::free_slots() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(free_.size());
}

}  // namespace loadstar::loader
