#include "store/tensor_tap.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace loadstar::store {

TensorTap::TensorTap(std::vector<uint64_t> sizes, size_t consumers)
    : sizes_(std::move(sizes)), position_(consumers, 0) {}

bool TensorTap::Held(const Slot& slot) const {
  if (slot.index == Slot::kEmpty) return false;
  for (size_t position : position_) {
    if (position <= slot.index) return true;
  }
  return false;
}

TensorTap::Slot* TensorTap::Find(size_t index) {
  for (Slot& slot : slots_) {
    if (slot.index == index) return &slot;
  }
  return nullptr;
}

absl::Status TensorTap::Copy(size_t index, uint64_t offset, const char* data, size_t n) {
  if (index >= sizes_.size() || offset + n > sizes_[index]) {
    return absl::InternalError(fmt::format(
        "tensor tap: bytes [{}, {}) of tensor {} are past its end", offset, offset + n, index));
  }
  if (offset == 0) {
    std::unique_lock<std::mutex> lock(mu_);
    if (filling_ != nullptr) {
      return absl::InternalError(fmt::format(
          "tensor tap: tensor {} started before tensor {} was complete", index,
          filling_->index));
    }
    // Wait for a slot no consumer may still read (the one of tensor index - 2, at most).
    Slot* free = nullptr;
    cv_.wait(lock, [&] {
      if (!error_.ok()) return true;
      for (Slot& slot : slots_) {
        if (!Held(slot)) {
          free = &slot;
          return true;
        }
      }
      return false;
    });
    if (!error_.ok()) return error_;
    if (free->capacity < sizes_[index]) {
      // Uninitialized: the copy overwrites it, and zeroing would touch every page twice.
      free->data.reset(new char[sizes_[index]]);
      free->capacity = sizes_[index];
    }
    free->index = index;
    free->filled = 0;
    filling_ = free;
  } else {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.ok()) return error_;
  }
  // Only the producer writes the filling slot: consumers read its first `filled` bytes
  // (GetPrefix), and these bytes lie past them.
  Slot* slot = filling_;
  if (slot == nullptr || slot->index != index || slot->filled != offset) {
    return absl::InternalError(fmt::format(
        "tensor tap: bytes at {} of tensor {} out of order", offset, index));
  }
  if (n > 0) std::memcpy(slot->data.get() + offset, data, n);
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot->filled += n;
    if (slot->filled == sizes_[index]) {
      filling_ = nullptr;
    }
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<std::string_view> TensorTap::Get(size_t consumer, size_t index) {
  if (index >= sizes_.size()) {
    return absl::InternalError(
        fmt::format("tensor tap: tensor {} of {} requested", index, sizes_.size()));
  }
  return GetPrefix(consumer, index, sizes_[index]);
}

absl::StatusOr<std::string_view> TensorTap::GetPrefix(size_t consumer, size_t index,
                                                      uint64_t end) {
  std::unique_lock<std::mutex> lock(mu_);
  if (index >= sizes_.size() || end > sizes_[index]) {
    return absl::InternalError(
        fmt::format("tensor tap: bytes [0, {}) of tensor {} of {} requested", end, index,
                    sizes_.size()));
  }
  if (index < position_[consumer]) {
    return absl::InternalError(fmt::format(
        "tensor tap: tensor {} requested again after consumer {} released it", index,
        consumer));
  }
  position_[consumer] = index;  // earlier tensors are released
  cv_.notify_all();
  if (end == 0) return std::string_view();
  Slot* slot = nullptr;
  cv_.wait(lock, [&] {
    slot = Find(index);
    return !error_.ok() || (slot != nullptr && slot->filled >= end);
  });
  if (!error_.ok()) return error_;
  return std::string_view(slot->data.get(), end);
}

void TensorTap::Release(size_t consumer, size_t index) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    position_[consumer] = std::max(position_[consumer], index + 1);
  }
  cv_.notify_all();
}

void TensorTap::Detach(size_t consumer) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    position_[consumer] = Slot::kEmpty;
  }
  cv_.notify_all();
}

void TensorTap::Fail(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) {
      error_ = status.ok() ? absl::InternalError("tensor tap failed without a status")
                           : std::move(status);
    }
  }
  cv_.notify_all();
}

}  // namespace loadstar::store
