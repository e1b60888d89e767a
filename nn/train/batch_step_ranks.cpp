// The step's exchange between ranks (Note [Ranks]): BatchStep's layout of its block of the
// Exchange, and the reads of other ranks' micro-batches from it.
#include <algorithm>
#include <cstring>

#include "nn/train/batch_step.hpp"

namespace tbgrad::nn::detail {

void BatchStep::lay_out_exchange(const std::vector<Tensor>& params) {
  summed_at_.assign(params.size(), 0);
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (plan_->contracted(i)) continue;
    summed_at_[i] = summed_size_;
    summed_size_ += params[i].numel();
  }
  std::int64_t row_size = 0;  // floats per example over all gathered values
  for (const Tensor& g : tasks_[0].contraction->gathered) row_size += g.numel() / batch;
  const std::size_t ranks = rank_first_.size() - 1;
  std::vector<std::int64_t> bytes;
  for (std::size_t q = 0; q < ranks; ++q) {
    const auto mbs = static_cast<std::int64_t>(rank_first_[q + 1] - rank_first_[q]);
    const std::int64_t examples = offsets_[rank_first_[q + 1]] - offsets_[rank_first_[q]];
    const std::int64_t rows_at =
        mbs * static_cast<std::int64_t>(sizeof(Result)) +
        mbs * summed_size_ * static_cast<std::int64_t>(sizeof(float));
    rows_at_.push_back(rows_at);
    bytes.push_back(rows_at + examples * row_size * static_cast<std::int64_t>(sizeof(float)));
  }
  exchange_.lay_out(std::move(bytes), static_cast<std::size_t>(comm_.rank()));
}

void BatchStep::exchange() {
  const std::size_t rank = exchange_.rank();
  std::byte* out = exchange_.mine();
  BlockWriter results(out);
  for (const auto& part : parts_) {
    const Result res{part->loss(), part->correct()};
    results.put(&res, sizeof res);
  }
  const std::size_t mbs = parts_.size();
  float* summed = reinterpret_cast<float*>(out + mbs * sizeof(Result));
  for (std::size_t j = 0; j < mbs; ++j) {
    for (std::size_t i = 0; i < summed_at_.size(); ++i) {
      if (plan_->contracted(i)) continue;
      const Tensor& g = parts_[j]->grad_values[i];
      std::memcpy(summed + static_cast<std::int64_t>(j) * summed_size_ + summed_at_[i], g.raw(),
                  g.nbytes());
    }
  }
  BlockWriter rows(out + rows_at_[rank]);
  const std::int64_t ex_first = offsets_[rank_first_[rank]];
  const std::int64_t examples = offsets_[rank_first_[rank + 1]] - ex_first;
  for (const Tensor& m : batch_matrices()) {  // this rank's examples: one run of rows
    const std::int64_t row = m.numel() / batch;
    rows.put(m.data<float>() + ex_first * row, static_cast<std::size_t>(examples * row) * sizeof(float));
  }
  exchange_.share(comm_, &stats_);
}

void BatchStep::copy_in_other_ranks_rows() {
  for (std::size_t q = 0; q + 1 < rank_first_.size(); ++q) {
    if (q == exchange_.rank()) continue;
    const std::int64_t ex0 = offsets_[rank_first_[q]];
    const std::int64_t count = offsets_[rank_first_[q + 1]] - ex0;
    const std::byte* rows = exchange_.block(q) + rows_at_[q];
    for (const Tensor& m : batch_matrices()) {
      const std::int64_t row = m.numel() / batch;
      const auto bytes = static_cast<std::size_t>(count * row) * sizeof(float);
      std::memcpy(m.data<float>() + ex0 * row, rows, bytes);
      rows += bytes;
    }
  }
}

std::pair<std::size_t, std::size_t> BatchStep::owner(std::size_t k) const {
  const auto it = std::upper_bound(rank_first_.begin(), rank_first_.end(), k);
  const auto q = static_cast<std::size_t>(it - rank_first_.begin()) - 1;
  return {q, k - rank_first_[q]};
}

BatchStep::Result BatchStep::result_of(std::size_t k) const {
  if (exchange_.empty()) return {parts_[k - mine_]->loss(), parts_[k - mine_]->correct()};
  const auto [q, j] = owner(k);
  Result r;
  std::memcpy(&r, exchange_.block(q) + j * sizeof(Result), sizeof r);
  return r;
}

const float* BatchStep::summed_of(std::size_t k, std::size_t i) const {
  if (local(k)) return parts_[k - mine_]->grad_values[i].data<float>();
  const auto [q, j] = owner(k);
  const std::size_t mbs = rank_first_[q + 1] - rank_first_[q];
  const auto* base = reinterpret_cast<const float*>(exchange_.block(q) + mbs * sizeof(Result));
  return base + static_cast<std::int64_t>(j) * summed_size_ + summed_at_[i];
}

}  // namespace tbgrad::nn::detail
