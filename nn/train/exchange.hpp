// The buffer ranks exchange (Note [Ranks]), one format for the trainer's steps and the
// evaluator's results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "distributed/communicator.hpp"
#include "nn/train.hpp"

namespace tbgrad::nn::detail {

// Note [Ranks]: several processes (TrainerOptions::comm, docs/distributed.md) train one batch
// as R ranks: rank q runs micro-batches [q*M/R, (q+1)*M/R) of the batch's M (even_blocks), over
// its own threads as above. After its micro-batches, each rank writes into its block of one
// exchange buffer what the gradient needs from them (each micro-batch's loss, correct count and
// summed parameters' gradients, and its examples' gathered rows: BatchStep::exchange) and one
// allgather gives every rank every block. Each rank then forms the whole batch's gradient from
// the same bytes with the same arithmetic in the same order as one process does (it copies the
// other ranks' rows into its batch matrices where its own tasks' would be), so the weights stay
// equal on all ranks and equal to one process's, for any R and any thread counts. A batch that
// runs as one graph (a single micro-batch, or a model over kMaxMicroBatchedParams) runs whole
// on every rank: the same result, no faster. The evaluator exchanges its batches' results the
// same way (Evaluator::evaluate).
//
// The buffer holds every rank's block in rank order. Block sizes come from what every rank
// knows (the batch size, the rank count), so every rank lays the buffer out alike; each rank
// writes its own block, share() fills in the others.
class Exchange {
 public:
  // Block q holds bytes[q] bytes; this process is rank `rank`. Allocates.
  void lay_out(std::vector<std::int64_t> bytes, std::size_t rank);
  bool empty() const { return buffer_.empty(); }
  std::size_t rank() const { return rank_; }
  std::byte* mine() { return buffer_.data() + at_[rank_]; }
  const std::byte* block(std::size_t q) const { return buffer_.data() + at_[q]; }
  std::int64_t bytes() const { return static_cast<std::int64_t>(buffer_.size()); }
  // One allgather: every rank's block from its owner. Counted into `stats` when given.
  void share(dist::Communicator& comm, Trainer::ExchangeStats* stats = nullptr);

 private:
  std::vector<std::byte> buffer_;
  std::vector<std::int64_t> at_, bytes_;  // per rank
  std::size_t rank_ = 0;
};

// Writes a block front to back.
class BlockWriter {
 public:
  explicit BlockWriter(std::byte* at) : at_(at) {}
  void put(const void* src, std::size_t n) {
    if (n == 0) return;  // src may be null (nothing to write): not for memcpy
    std::memcpy(at_, src, n);
    at_ += n;
  }
  template <typename T>
  void put(std::span<const T> values) {
    put(values.data(), values.size_bytes());
  }

 private:
  std::byte* at_;
};

// Reads a block front to back, in the order it was written.
class BlockReader {
 public:
  explicit BlockReader(const std::byte* at) : at_(at) {}
  template <typename T>
  T get() {
    T v;
    std::memcpy(&v, at_, sizeof v);
    at_ += sizeof v;
    return v;
  }

 private:
  const std::byte* at_;
};

}  // namespace tbgrad::nn::detail
