// Losses: regression (mse_loss, l1_loss, huber_loss), binary and multi-label classification
// (binary_cross_entropy_with_logits), class indices (nll_loss, and softmax_cross_entropy with
// class weights and label smoothing). Each is one fused op with its own gradient kernels, and
// follows PyTorch 1.13's torch.nn.functional of the same name: its definition, its defaults and
// its `reduction` (kMean, the default, is the mean over every element; for the class-index
// losses with class weights, the weighted mean: divided by the sum of the rows' label weights).
// Where tbgrad differs from PyTorch, the function says so.
//
// A loss with Reduction::kMean and no class weights is a mean over the batch's examples, and
// one with kSum a sum, which the trainer can split into micro-batches (Note [Micro-batches] in
// nn/train/partition.hpp, Note [Batch means] in graph/op.hpp, Note [Loss split] in
// nn/train/loss_split.hpp); a class-weighted mean runs as one graph per batch there.
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

// As PyTorch's reduction= "mean", "sum", "none".
enum class Reduction { kMean, kSum, kNone };
const char* reduction_name(Reduction r);  // "mean", "sum", "none"

// mean((pred - target)^2). pred and target of the same shape (PyTorch broadcasts them with a
// warning; tbgrad requires equal shapes) and dtype. kNone: the squared errors, pred's shape.
Value mse_loss(Value pred, Value target, Reduction reduction = Reduction::kMean);
// mean(|pred - target|). Its gradient at pred == target is 0 (as PyTorch's sign(0)); a NaN
// difference gives a NaN gradient (PyTorch's sign(NaN) is 0).
Value l1_loss(Value pred, Value target, Reduction reduction = Reduction::kMean);
// mean of 0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere, d = pred - target, as
// F.huber_loss. delta must be positive and finite.
Value huber_loss(Value pred, Value target, double delta = 1.0,
                 Reduction reduction = Reduction::kMean);
// mean of -[pos_weight t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], x the logits and t the
// targets (in [0, 1]; multi-hot labels for multi-label classification), computed in the stable
// form (1 - t) x + (1 + (pos_weight - 1) t) (log(1 + exp(-|x|)) + max(-x, 0)). pos_weight: one
// weight per class, [C] with C logits' last dimension (PyTorch's pos_weight, which broadcasts
// likewise). Differentiable in the logits and the targets; pos_weight is not (PyTorch refuses
// a pos_weight that requires grad; tbgrad's gradient for it is zero).
Value binary_cross_entropy_with_logits(Value logits, Value target,
                                       Reduction reduction = Reduction::kMean);
Value binary_cross_entropy_with_logits(Value logits, Value target, Value pos_weight,
                                       Reduction reduction = Reduction::kMean);

// -log_probs[i, labels[i]] (times weights[labels[i]]): log_probs [B, C] (log_softmax's output),
// labels [B] i32 in [0, C), weights [C]. kMean with weights divides by the sum of the rows'
// label weights, as F.nll_loss. A label outside [0, C) makes the run throw tbgrad::Error naming
// the op, the label and its row (PyTorch's ignore_index, -100 by default, is not supported: -100
// is an error too). The weights are not differentiated (as in PyTorch: their gradient is zero).
Value nll_loss(Value log_probs, Value labels, Reduction reduction = Reduction::kMean);
Value nll_loss(Value log_probs, Value labels, Value weights,
               Reduction reduction = Reduction::kMean);

// F.cross_entropy(logits, labels, weight=weights, label_smoothing=..., reduction=...), fused
// with its softmax and stable: row i's loss is -sum_c q[i, c] log_softmax(logits)[i, c], with
// q[i, c] = (1 - s) w[labels[i]] [c == labels[i]] + (s / C) w[c] (s the label smoothing, w the
// class weights, 1 without); kMean divides the rows' sum by the sum of w[labels[i]] (by B without
// weights). With the default options this is softmax_cross_entropy(logits, labels) itself, the
// same op and bits. Labels as nll_loss (no ignore_index).
struct CrossEntropyOptions {
  double label_smoothing = 0.0;  // in [0, 1]
  Value weights{};               // [C] class weights (not differentiated); invalid: none
  Reduction reduction = Reduction::kMean;
};
Value softmax_cross_entropy(Value logits, Value labels, const CrossEntropyOptions& options);

// The gradient kernels the VJPs use, not differentiable themselves. `grad` is the loss's
// gradient: a scalar, or for Reduction::kNone of the loss's shape. LossWrt says which input's
// gradient: the prediction (logits) or the target.
enum class LossWrt { kPrediction, kTarget };
Value mse_loss_backward(Value pred, Value target, Value grad, Reduction reduction, LossWrt wrt);
Value l1_loss_backward(Value pred, Value target, Value grad, Reduction reduction, LossWrt wrt);
Value huber_loss_backward(Value pred, Value target, Value grad, double delta, Reduction reduction,
                          LossWrt wrt);
// pos_weight: an invalid Value for none.
Value binary_cross_entropy_with_logits_backward(Value logits, Value target, Value pos_weight,
                                                Value grad, Reduction reduction, LossWrt wrt);
// d/d log_probs; weights: an invalid Value for none.
Value nll_loss_backward(Value log_probs, Value labels, Value weights, Value grad,
                        Reduction reduction);
// d/d logits of softmax_cross_entropy(logits, labels, options).
Value cross_entropy_backward(Value logits, Value labels, Value grad,
                             const CrossEntropyOptions& options);

}  // namespace tbgrad
