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
//   kRelu:     y[i] = y[i] > 0 ? y[i] : 0                   (relu; the producer is input 0)
//   kReluMask: y[i] = mask[i] > 0 ? y[i] : 0                (relu_backward(s, g): the mask is
//              input 0, s, and the producer input 1, g)
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
struct KernelContext {
  std::span<const Tensor> inputs;
  const Tensor& output;
  void* workspace;
  Epilogue epilogue = {};
};

class Op {
 public:
  virtual ~Op() = default;
  virtual const char* name() const = 0;
  virtual void forward(const KernelContext& ctx) const = 0;
  // Gradients of the inputs given the gradient `grad` of the output, built as new graph nodes.
  // An invalid Value means "no gradient flows to this input" (labels, say).
  virtual std::vector<Value> vjp(std::span<const Value> inputs, Value output, Value grad) const;
  virtual bool has_vjp() const { return true; }
  // Note [Epilogues]: whether this op's kernel applies `kind` to its output when asked to.
  virtual bool accepts_epilogue(Epilogue::Kind kind) const {
    (void)kind;
    return false;
  }
  // Note [Epilogues]: what this op is as an epilogue of the op producing its input (kNone: it
  // cannot be one).
  virtual Epilogue::Kind epilogue_kind() const { return Epilogue::Kind::kNone; }
  // Scratch bytes the kernel needs (for deterministic reductions); the executor provides them.
  virtual std::size_t workspace_bytes(std::span<const Value> inputs, Value output) const {
    (void)inputs;
    (void)output;
    return 0;
  }
};

// Every op kind the library offers registers its name, so tests can enumerate them and demand a
// gradient check for each.
struct OpInfo {
  std::string name;
  bool has_vjp;
};
const std::vector<OpInfo>& registered_ops();
bool register_op(std::string name, bool has_vjp);

#define TBGRAD_CONCAT_INNER(a, b) a##b
#define TBGRAD_CONCAT(a, b) TBGRAD_CONCAT_INNER(a, b)
#define TBGRAD_REGISTER_OP(op_name, op_has_vjp)                                        \
  [[maybe_unused]] static const bool TBGRAD_CONCAT(tbgrad_registered_op_, __LINE__) = \
      ::tbgrad::register_op(op_name, op_has_vjp)

// Shape-rule helper: throws ShapeError("op: message").
[[noreturn]] void shape_error(const char* op, const std::string& message);

}  // namespace tbgrad
