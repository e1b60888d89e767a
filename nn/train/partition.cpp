#include "nn/train/partition.hpp"

namespace tbgrad::nn::detail {

std::vector<std::int64_t> micro_batch_offsets(std::int64_t batch, std::int64_t micro) {
  std::vector<std::int64_t> offsets;
  for (std::int64_t at = 0; at < batch; at += micro) offsets.push_back(at);
  if (offsets.size() > 1 && batch - offsets.back() == 1) offsets.pop_back();
  offsets.push_back(batch);
  return offsets;
}

std::vector<std::size_t> even_blocks(std::size_t first, std::size_t count, std::size_t blocks) {
  std::vector<std::size_t> at;
  for (std::size_t q = 0; q <= blocks; ++q) at.push_back(first + q * count / blocks);
  return at;
}

}  // namespace tbgrad::nn::detail
