// Dropout (F.dropout of PyTorch 1.13), with masks from a counter-based generator.
#pragma once

#include <cstdint>

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

// In the run's training mode (Note [Run info] in graph/op.hpp): each element of x is zeroed
// with probability p and the others scaled by 1 / (1 - p), y = x * mask * scale (a NaN of x
// stays NaN, as in PyTorch, which multiplies too); in evaluation mode y = x. p in [0, 1]; p = 1
// zeroes everything (scale 0, not infinity).
//
// The mask is a function of (the run's seed, its step, `stream`, the element's index in the
// whole batch): element i of a graph whose first example is the batch's example
// RunInfo::first_example is the batch's element first_example * (x.numel() / examples) + i,
// where examples is RunInfo::examples (0: x's first dimension). So the same masks come out for
// any thread count, any micro-batch split and any number of ranks: one SplitMix64 hash per
// element, keep it when its top 53 bits / 2^53 >= p. `stream` tells dropouts of one graph
// apart; without it, it is the node's id in the graph (the same for every batch size of a
// model builder, which builds the same nodes in the same order).
//
// The VJP is dropout of the gradient with the same p and stream: the same mask, recomputed.
Value dropout(Value x, double p);
Value dropout(Value x, double p, std::uint64_t stream);

}  // namespace tbgrad
