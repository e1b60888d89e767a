#include "nn/train/exchange.hpp"

#include <chrono>

namespace tbgrad::nn::detail {

void Exchange::lay_out(std::vector<std::int64_t> bytes, std::size_t rank) {
  bytes_ = std::move(bytes);
  rank_ = rank;
  at_.assign(bytes_.size() + 1, 0);
  for (std::size_t q = 0; q < bytes_.size(); ++q) at_[q + 1] = at_[q] + bytes_[q];
  buffer_.assign(static_cast<std::size_t>(at_.back()), std::byte{0});
}

void Exchange::share(dist::Communicator& comm, Trainer::ExchangeStats* stats) {
  const auto t0 = std::chrono::steady_clock::now();
  comm.allgather_in_place(buffer_, bytes_);
  if (!stats) return;
  stats->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++stats->steps;
  stats->bytes = bytes();
}

}  // namespace tbgrad::nn::detail
