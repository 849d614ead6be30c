// Hands the bytes of the tensors one writer copies to consumers on other threads, tensor
// by tensor, without buffering the model: the one-pass `store save --quantize`
// (store/one_pass_writer.h) copies each source tensor into the store and, through a tap,
// to the variant writers that quantize it.
//
// The producer gives every tensor's bytes in order (Copy, contiguous pieces); a tensor is
// published when its last byte arrived. Consumers ask for tensors in increasing order
// (Get) and say when they no longer need one's bytes (Release). The tap has kSlots
// reused buffers, each holding one whole tensor: the producer fills tensor i+1 while the
// consumers still hold tensor i, and waits before tensor i+2 until every consumer has
// released tensor i. So memory is at most two tensors (the largest ones) and the
// producer runs at most one tensor ahead of the slowest consumer.
//
// A consumer that needs no whole tensor (a copy of it) can read one while it arrives:
// GetPrefix waits only for the bytes it asks for.
//
// Zero-byte tensors are never copied (writers make no filler call for them): Get returns
// an empty view for them at once, from the sizes given at construction.
//
// Failure: Fail(status) from either side stops the tap; every waiting and later Copy /
// Get returns that status (the first one given), so neither side waits on a partner that
// gave up.
//
// Thread safety: one producer thread and any number of consumer threads (each consumer
// index used by one thread at a time); all methods are thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loadstar::store {

class TensorTap {
 public:
  static constexpr size_t kSlots = 2;

  // `sizes[i]`: the byte size of tensor i; `consumers`: how many consumers (0 ..
  // consumers-1) must release a tensor before its slot is reused.
  TensorTap(std::vector<uint64_t> sizes, size_t consumers);
  TensorTap(const TensorTap&) = delete;
  TensorTap& operator=(const TensorTap&) = delete;

  size_t tensor_count() const { return sizes_.size(); }

  // Producer: bytes [offset, offset + n) of tensor `index`. Pieces of one tensor come with
  // contiguous offsets from 0, tensors in increasing index order (skipping zero-byte
  // ones). The first piece waits for a free slot. Errors: the tap's failure, or Internal
  // for a piece out of order or past the tensor's size.
  absl::Status Copy(size_t index, uint64_t offset, const char* data, size_t n);

  // Consumer `consumer`: the bytes of tensor `index`, once published; valid until this
  // consumer releases it (Release, or a Get of a later index). Errors: the tap's failure,
  // or Internal for an index this consumer already released.
  absl::StatusOr<std::string_view> Get(size_t consumer, size_t index);

  // The same for the first `end` bytes of tensor `index` (the view has `end` bytes):
  // returns as soon as they arrived, while the producer may still copy the rest.
  absl::StatusOr<std::string_view> GetPrefix(size_t consumer, size_t index, uint64_t end);

  // Consumer `consumer` no longer needs tensors up to and including `index`.
  void Release(size_t consumer, size_t index);

  // Consumer `consumer` needs nothing more (it finished or stopped).
  void Detach(size_t consumer);

  // Stops the tap with `status` (not OK); the first failure wins.
  void Fail(absl::Status status);

 private:
  struct Slot {
    static constexpr size_t kEmpty = std::numeric_limits<size_t>::max();
    size_t index = kEmpty;  // tensor held (kEmpty: none)
    uint64_t filled = 0;    // bytes arrived (written by the producer under mu_)
    std::unique_ptr<char[]> data;  // reused; grows to the largest tensor it held
    uint64_t capacity = 0;
  };

  // REQUIRES: mu_ held. Whether some consumer may still read the slot's tensor.
  bool Held(const Slot& slot) const;
  // REQUIRES: mu_ held. The slot holding tensor `index`, or nullptr.
  Slot* Find(size_t index);

  const std::vector<uint64_t> sizes_;
  std::mutex mu_;
  std::condition_variable cv_;
  Slot slots_[kSlots];
  // Per consumer: the lowest index it may still Get (tensors below it are released).
  std::vector<size_t> position_;
  Slot* filling_ = nullptr;  // the producer's slot while it copies a tensor
  absl::Status error_;
};

// A consumer's handle on a shared tap: what the fillers of a variant's tensors hold.
struct TapReader {
  std::shared_ptr<TensorTap> tap;
  size_t consumer = 0;

  absl::StatusOr<std::string_view> Get(size_t index) const { return tap->Get(consumer, index); }
  absl::StatusOr<std::string_view> GetPrefix(size_t index, uint64_t end) const {
    return tap->GetPrefix(consumer, index, end);
  }
  void Release(size_t index) const { tap->Release(consumer, index); }
};

}  // namespace loadstar::store
