// The interface every op implements. An op family lives in one file of ops/: its shape rule (in
// the function users call), its kernel (forward) and its vector-Jacobian product side by side.
#pragma once

#include <cstddef>
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

struct KernelContext {
  std::span<const Tensor> inputs;
  const Tensor& output;
  void* workspace;
  Epilogue epilogue = {};
};

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
