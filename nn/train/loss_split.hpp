// Which losses the trainer may split into micro-batches, and how it weights the parts
// (Note [Loss split]).
#pragma once

#include <cstdint>
#include <string>

#include "graph/graph.hpp"
#include "nn/train.hpp"

namespace tbgrad::nn::detail {

// Note [Loss split]: the trainer forms a batch's loss and gradient from its micro-batches' as
// sum_k w_k L(part k), which is right for two kinds of loss only. It reads which kind a model's
// loss is from the graph: from ModelGraph::loss back through the ops that are linear in their
// inputs (add, sub, scale: BatchReduce::kLinear, their factors multiplied along the way) to its
// terms, each an op declaring how its value over a batch follows from its parts' (Note [Batch
// means] in graph/op.hpp), or a value that does not depend on the batch at all (read from no
// graph input: a penalty on the weights). The model is built at two batch sizes b1 and b2 (the
// micro-batch and one more), and each term is compared between them:
//   a mean:     a kMean op (a loss with Reduction::kMean and no class weights,
//               softmax_cross_entropy) whose factor is the same at both sizes, or a kSum op
//               (sum, a kSum loss) whose factor times the batch is the same (mean(x) is
//               scale(sum(x), 1 / numel));
//   a sum:      a kSum op whose factor is the same at both sizes;
//   a constant: a value that depends on no graph input, its factor the same at both sizes;
// a mean's or sum's input must hold the same whole number of elements per example at both
// sizes.
// A loss whose terms are all means (and constants) splits as today, each micro-batch weighted
// by its share of the batch (weights that add up to 1, so a constant stays itself); one whose
// terms are all sums splits with every micro-batch weighted 1 (the sum of the parts). Anything
// else (a term that is neither, such as a class-weighted mean or a product; a mean and a sum
// together; a sum and a constant, which the parts would count once each) runs the batch whole:
// micro-batch = batch, and with several ranks every rank runs the whole batch, as for a
// batch-wide op (Note [Train and eval modes] in nn/train.hpp). The same weights scale input 0 of
// the gradients formed over the batch (Note [Batch contraction], nn/train/contraction.cpp) and
// combine the micro-batches' losses (BatchStep::compute). As the micro-batches already assume,
// each example's rows are taken to be computed from that example alone (batch_norm, which is
// not, keeps the batch whole by its own trait).
struct LossSplitChoice {
  LossSplit split = LossSplit::kWhole;
  std::string why;  // for kWhole: which term, in the user's terms; else what the terms are
};

// The loss of model graphs m1 (of g1, b1 examples) and m2 (of g2, b2 examples), b1 != b2.
LossSplitChoice classify_loss(const Graph& g1, const ModelGraph& m1, std::int64_t b1,
                              const Graph& g2, const ModelGraph& m2, std::int64_t b2);

}  // namespace tbgrad::nn::detail
