// How a batch is split: into micro-batches, the micro-batches into the ranks' blocks, a rank's
// into its tasks' blocks. Index arithmetic only, from sizes every rank and thread knows, so that
// the split, and with it every result, depends on the batch size alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tbgrad::nn::detail {

// Note [Micro-batches]: a training batch is split into micro-batches of `micro` examples
// (default_micro_batch: 16 for batches of 32 or more, 8 below; a last one of a single example
// joins the one before it, micro_batch_offsets), each with its own graph and executor. The micro-batches run as R parallel tasks (R = the thread count, at most one per
// micro-batch), task t running a fixed, contiguous block of them, each loading its own examples
// and running its kernels inline under SerialScope; a second parallel region then forms the
// batch's gradient and applies the update (Note [Replicas]). Two parallel regions per step
// instead of one per op: at batch 32 the ops are too small for their fork/join to pay. With
// more threads than micro-batches, the kernels of each task split their work over the others
// instead of running inline. The split depends on the batch size only, so results do not
// depend on the thread count.
//
// Why 16: the fully connected layers' forward product runs as W·Xᵀ with the micro-batch as
// the vector dimension (ops/matmul_kernels.cpp), so 8 examples half-filled an AVX-512 vector
// and gave AVX2 one-vector tiles, and every op's fixed cost was paid twice as often. Measured
// on the seed model at batch 32, TBGRAD_MAX_ISA=avx2: 12-15% faster epochs at 1 and 2 threads
// than micro-batches of 8 (docs/performance.md). Batches below 32 keep 8, so that they still
// make two micro-batches for two threads.
//
// Models with more than kMaxMicroBatchedParams parameters keep the whole batch in one graph:
// for seed-nopool (250 thousand parameters, 242 thousand of them FC1's) micro-batches measured
// 1.36x slower at one thread, though 1.1x faster at two, each task repeating FC1's 15-MFLOP
// weight gradient (docs/performance.md). Batches of at most one micro-batch run their kernels
// inline: they are too small for any fork/join to pay.

constexpr std::int64_t kMicroBatch = 16;
constexpr std::int64_t kSmallMicroBatch = 8;  // for batches under 2 * kMicroBatch

constexpr std::int64_t default_micro_batch(std::int64_t batch) {
  return batch >= 2 * kMicroBatch ? kMicroBatch : kSmallMicroBatch;
}
constexpr std::int64_t kMaxMicroBatchedParams = 100000;

// Where a batch of `batch` examples splits into micro-batches of `micro` (Note [Micro-batches]):
// micro-batch k is examples [offsets[k], offsets[k + 1]). A last micro-batch of one example
// joins the one before it: a graph of one example can differ from the others (with a batch of
// 1, a [1, F] parameter multiplying a [B, F] value broadcasts nothing, so its gradient needs
// no sum), and the plan's graphs are of `micro` and `micro + 1` examples.
std::vector<std::int64_t> micro_batch_offsets(std::int64_t batch, std::int64_t micro);

// `count` things from `first` on in `blocks` contiguous blocks, as even as integers allow: block
// q is [at[q], at[q + 1]) (the ranks' blocks of micro-batches, a rank's tasks' blocks).
std::vector<std::size_t> even_blocks(std::size_t first, std::size_t count, std::size_t blocks);

}  // namespace tbgrad::nn::detail
