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

// What a kernel sees: its input tensors, its output tensor (preallocated by the executor, not
// zeroed) and a scratch buffer of the size the op asked for in workspace_bytes().
struct KernelContext {
  std::span<const Tensor> inputs;
  const Tensor& output;
  void* workspace;
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
