// The interface every op implements. An op family lives in one file of ops/: its shape rule (in
// the function users call), its kernel (forward) and its vector-Jacobian product side by side.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/graph/tensor.hpp"

namespace tbgrad {

// Note [Epilogues]: a ReLU, or a ReLU's gradient, that is the only reader of its producer's
// output runs inside the producer's kernel: the executor (graph/executor.cpp) gives the
// producer the consumer's output buffer and an Epilogue, and the kernel applies it to each
// block of its output right after computing it, while the block is in the core's L1 cache,
// instead of a second pass over the whole output from L2. The producer must say it can
// (Op::accepts_epilogue); the consumer says what it is (Op::epilogue_kind):
//   kRelu:     y[i] = y[i] <= 0 ? 0 : y[i]                  (relu; the producer is input 0)
//   kReluMask: y[i] = mask[i] <= 0 ? 0 : y[i]               (relu_backward(s, g): the mask is
//              input 0, s, and the producer input 1, g)
// Written as `<= 0 ? 0 :` so that NaN propagates (the comparison is false for NaN), as
// torch.relu does, and a NaN mask passes the gradient, as torch's relu backward does; never
// as a max, which is not NaN-propagating on x86.
// The same selects the consumer's own kernel makes, so fused and unfused runs give the same
// bits (Executor's `fuse` option turns it off; tests/test_core.cpp compares the two).
struct Epilogue {
  enum class Kind { kNone, kRelu, kReluMask };
  Kind kind = Kind::kNone;
  const Tensor* mask = nullptr;  // kReluMask: same shape and dtype as the output
};

// What a kernel sees: its input tensors, its output tensor (preallocated by the executor, not
// zeroed), a scratch buffer of the size the op asked for in workspace_bytes(), and what to
// apply to the output as it is written (Note [Epilogues]; kNone unless accepts_epilogue).
// The arithmetic of one run of an op, for benchmarks and model summaries: floating-point
// operations (a multiply-add counts two) and the formula they come from.
struct OpCost {
  double flops = 0;
  const char* formula = "";
};

// Note [Run info]: what a kernel may know about the run it is part of, beyond its tensors: the
// mode (training or evaluation: batch_norm normalises with the batch's statistics and updates
// its running ones in training, uses the running ones in evaluation; dropout drops in training
// and is the identity in evaluation), the training step, a seed, and the index in the whole
// batch of the graph's first example (a micro-batch's first example; 0 for a graph of the whole
// batch). Counter-based random streams (dropout's masks) are keyed by (seed, step, the element's
// index in the whole batch), so they do not depend on the thread count, the micro-batch split
// or the number of ranks. An Executor holds one (Executor::set_run_info) and hands it to every
// kernel; nn::Trainer sets training mode, its step and seed before every run, nn::Evaluator
// evaluation mode. Unset, a run is in training mode at step 0 with seed 0, as a PyTorch module
// is in training mode until eval() is called.
struct RunInfo {
  bool training = true;
  std::uint64_t step = 0;
  std::uint64_t seed = 0;
  std::int64_t first_example = 0;
  // The number of examples the graph holds (its batch); 0: unknown, and then an op keyed by
  // examples takes its input's first dimension as the batch.
  std::int64_t examples = 0;
};

struct KernelContext {
  std::span<const Tensor> inputs;
  const Tensor& output;
  void* workspace;
  Epilogue epilogue = {};
  const RunInfo* run = nullptr;  // Note [Run info]; null: a default RunInfo
  const RunInfo& run_info() const {
    static const RunInfo kDefault{};
    return run ? *run : kDefault;
  }
};

// Note [Batch means]: the trainer splits a batch into micro-batches and forms the batch's loss as
// the micro-batches' losses, each weighted by its share of the batch for a loss that is a mean
// over the examples, by 1 for a sum, and keeps the batch whole for anything else, such as a mean
// weighted by anything but the count (Note [Micro-batches] in nn/train/partition.hpp, Note
// [Loss split] in nn/train/loss_split.hpp). An op says which it is:
//   kMean:   its value (one number) is the mean over the examples of a term of each example's
//            rows of its inputs: every row the same weight (a loss with Reduction::kMean and no
//            class weights; softmax_cross_entropy).
//   kSum:    its value (one number) is the sum over its input's elements (sum; a loss with
//            Reduction::kSum).
//   kLinear: its value is sum_i linear_factor(i) * input i (add, sub, scale).
// An op whose instances differ (a loss's reduction) overrides Op::batch_reduce().
enum class BatchReduce : unsigned char { kNone, kMean, kSum, kLinear };

// Note [Op traits]: what the rest of the library needs to know about an op kind, as data
// declared once with the class that implements it. A class lists the kinds it implements in
// `static constexpr OpTraits kKinds[]` (one entry, or one per kind: add, sub and mul share a
// class), returns its own entry from traits(), and TBGRAD_REGISTER_OPS(Class) registers every
// entry; name(), has_vjp(), accepts_epilogue() and epilogue_kind() read them. Nothing outside
// ops/ compares op names: the executor and the trainer ask these properties.
struct OpTraits {
  const char* name = "";  // as the registry, shape errors and profiles say it
  bool has_vjp = true;    // false: a gradient kernel, not differentiable itself
  // Note [Epilogues]: what this op is as an epilogue of the op producing its input (kNone: it
  // cannot be one), and the epilogues its kernel applies to its output when asked to.
  Epilogue::Kind epilogue = Epilogue::Kind::kNone;
  bool accepts_relu = false, accepts_relu_mask = false;
  // Note [Batch contraction]: the op's result is a sum over its inputs' leading rows of a term
  // read from the same row of every input, and linear in input 0: when every input has a fixed
  // number of rows per example and the result's shape does not depend on the batch, the result
  // over a batch is the op applied (apply_to) to the batch's rows, each input's rows gathered
  // from every part of the batch and input 0's scaled by the part's weight. matmul(Aᵀ, B) and
  // sum_to are: the gradients of a fully connected layer's weight and bias.
  bool sums_over_rows = false;
  // Note [Batch means]: how the op's value over a batch follows from its values over parts of it.
  BatchReduce batch_reduce = BatchReduce::kNone;
  // Note [Batch-wide ops]: the op computes statistics over its input's whole batch (batch_norm
  // and its gradient kernels): its result over a batch is not its results over parts of the
  // batch put together. nn::Trainer keeps a graph holding such an op whole: the micro-batch is
  // the batch (the threads work inside the kernels), and with several ranks every rank runs the
  // whole batch (docs/design.md, Note [Batch statistics]).
  bool batch_wide = false;
};

class Op {
 public:
  virtual ~Op() = default;
  // Note [Op traits]. The default is a kind with none of the properties and no name: an op
  // written outside the library may instead override name() and the functions below.
  virtual const OpTraits& traits() const;
  virtual const char* name() const { return traits().name; }
  virtual void forward(const KernelContext& ctx) const = 0;
  // Gradients of the inputs given the gradient `grad` of the output, built as new graph nodes.
  // An invalid Value means "no gradient flows to this input" (labels, say).
  virtual std::vector<Value> vjp(std::span<const Value> inputs, Value output, Value grad) const;
  virtual bool has_vjp() const { return traits().has_vjp; }
  // Note [Epilogues]: whether this op's kernel applies `kind` to its output when asked to.
  virtual bool accepts_epilogue(Epilogue::Kind kind) const {
    return (kind == Epilogue::Kind::kRelu && traits().accepts_relu) ||
           (kind == Epilogue::Kind::kReluMask && traits().accepts_relu_mask);
  }
  // Note [Epilogues]: what this op is as an epilogue of the op producing its input (kNone: it
  // cannot be one).
  virtual Epilogue::Kind epilogue_kind() const { return traits().epilogue; }
  // Note [Batch means]: what this op is (its kind's trait unless an instance says otherwise),
  // and for kLinear the factor of input `i`.
  virtual BatchReduce batch_reduce() const { return traits().batch_reduce; }
  virtual double linear_factor(std::size_t i) const {
    (void)i;
    return 1.0;
  }
  // This op, with its attributes, applied to other inputs (Note [Batch contraction]: the same
  // values with more rows); an invalid Value for an op that cannot be (the default).
  virtual Value apply_to(std::span<const Value> inputs) const;
  // Its arithmetic for inputs and output of these shapes; the default, one operation per
  // output element, suits elementwise ops.
  virtual OpCost cost(std::span<const Shape> inputs, const Shape& output) const;
  // Scratch bytes the kernel needs (for deterministic reductions); the executor provides them.
  virtual std::size_t workspace_bytes(std::span<const Value> inputs, Value output) const {
    (void)inputs;
    (void)output;
    return 0;
  }
};

// Every op kind the library offers is registered, so tests can enumerate them and demand test
// cases and a gradient check for each.
struct OpInfo {
  std::string name;
  bool has_vjp;
  OpTraits traits;  // Note [Op traits] (only name and has_vjp for register_op(name, has_vjp))
};
const std::vector<OpInfo>& registered_ops();
bool register_op(const OpTraits& traits);
bool register_op(std::string name, bool has_vjp);  // an op kind without traits
template <std::size_t N>
bool register_ops(const OpTraits (&kinds)[N]) {
  for (const OpTraits& t : kinds) register_op(t);
  return true;
}

#define TBGRAD_CONCAT_INNER(a, b) a##b
#define TBGRAD_CONCAT(a, b) TBGRAD_CONCAT_INNER(a, b)
// Registers every kind an op class declares in its kKinds (Note [Op traits]).
#define TBGRAD_REGISTER_OPS(OpClass)                                                    \
  [[maybe_unused]] static const bool TBGRAD_CONCAT(tbgrad_registered_ops_, __LINE__) = \
      ::tbgrad::register_ops(OpClass::kKinds)
// Registers an op kind by name alone (for ops written without traits).
#define TBGRAD_REGISTER_OP(op_name, op_has_vjp)                                        \
  [[maybe_unused]] static const bool TBGRAD_CONCAT(tbgrad_registered_op_, __LINE__) = \
      ::tbgrad::register_op(op_name, op_has_vjp)

// Shape-rule helper: throws ShapeError("op: message").
[[noreturn]] void shape_error(const char* op, const std::string& message);

}  // namespace tbgrad
