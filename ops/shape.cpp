#include "ops/shape.hpp"

#include <cstring>
#include <memory>
#include <vector>

#include "graph/checked.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad {
namespace {

class ReshapeOp final : public Op {
 public:
  static constexpr OpTraits kKinds[] = {{.name = "reshape"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override { return {0, "copy"}; }
  void forward(const KernelContext& ctx) const override {
    // A copy, not an alias: the buffer plan stays simple and the data is small next to the
    // convolutions around it.
    if (ctx.output.nbytes()) std::memcpy(ctx.output.raw(), ctx.inputs[0].raw(), ctx.output.nbytes());
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    return {reshape(g, in[0].shape())};
  }
};
TBGRAD_REGISTER_OPS(ReshapeOp);

}  // namespace

Value reshape(Value x, std::initializer_list<std::int64_t> dims) {
  if (!x.valid()) shape_error("reshape", "input is an invalid (empty) Value");
  std::vector<std::int64_t> d(dims);
  int infer = -1;
  std::int64_t known = 1;
  for (std::size_t i = 0; i < d.size(); ++i) {
    if (d[i] == -1) {
      if (infer >= 0) shape_error("reshape", "at most one dimension may be -1");
      infer = static_cast<int>(i);
    } else if (d[i] < 0) {
      shape_error("reshape", "dimension " + std::to_string(d[i]) + " is negative");
    } else {
      known = checked::mul(known, d[i], "reshape");
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.shape().numel() % known != 0) {
      shape_error("reshape", "cannot infer the -1 dimension reshaping " + x.describe());
    }
    d[static_cast<std::size_t>(infer)] = x.shape().numel() / known;
  }
  return reshape(x, Shape(std::span<const std::int64_t>(d)));
}

Value reshape(Value x, Shape shape) {
  if (!x.valid()) shape_error("reshape", "input is an invalid (empty) Value");
  if (shape.numel() != x.shape().numel()) {
    shape_error("reshape", "cannot reshape " + x.describe() + " (" +
                               std::to_string(x.shape().numel()) + " elements) to " + shape.str() +
                               " (" + std::to_string(shape.numel()) + " elements)");
  }
  if (shape == x.shape()) return x;
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<ReshapeOp>(), ins, shape, x.dtype());
}

Value flatten(Value x) {
  if (!x.valid()) shape_error("flatten", "input is an invalid (empty) Value");
  if (x.shape().rank() < 1) shape_error("flatten", "input " + x.describe() + " is a scalar");
  const std::int64_t n = x.shape()[0];
  return reshape(x, Shape{n, n ? x.shape().numel() / n : 0});
}

}  // namespace tbgrad
