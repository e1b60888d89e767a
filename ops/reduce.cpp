#include "ops/reduce.hpp"

#include <algorithm>
#include <memory>

#include "graph/parallel.hpp"
#include "ops/elementwise.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

// Elements per chunk of a full reduction; fixed so sums do not depend on the thread count
// (Note [Determinism]).
constexpr std::int64_t kSumChunk = 4096;

class SumOp final : public Op {
 public:
  static constexpr OpTraits kKinds[] = {{.name = "sum", .batch_reduce = BatchReduce::kSum}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {static_cast<double>(in[0].numel()), "numel(in)"};
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return static_cast<std::size_t>(fixed_chunks(in[0].shape().numel(), kSumChunk)) *
           sizeof(double);
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      const std::int64_t n = ctx.inputs[0].numel();
      const std::int64_t chunks = fixed_chunks(n, kSumChunk);
      auto* partial = static_cast<double*>(ctx.workspace);
      parallel_for(chunks, 4, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t c = lo; c < hi; ++c) {
          double s = 0;
          const std::int64_t end = std::min(n, (c + 1) * kSumChunk);
          for (std::int64_t i = c * kSumChunk; i < end; ++i) s += static_cast<double>(x[i]);
          partial[c] = s;
        }
      });
      double total = 0;
      for (std::int64_t c = 0; c < chunks; ++c) total += partial[c];
      ctx.output.data<T>()[0] = static_cast<T>(total);
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    return {broadcast_to(g, in[0].shape())};
  }
};
TBGRAD_REGISTER_OPS(SumOp);

// out = x summed over the dimensions `out` stretches along when broadcast back to x.
class SumToOp final : public Op {
 public:
  SumToOp(const Shape& x, const Shape& out) : plan_(x, out, x), out_(out) {}
  // Note [Batch contraction]: sums over x's rows when `out` does not keep them.
  static constexpr OpTraits kKinds[] = {{.name = "sum_to", .sums_over_rows = true}};
  const OpTraits& traits() const override { return kKinds[0]; }
  Value apply_to(std::span<const Value> in) const override { return sum_to(in[0], out_); }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {static_cast<double>(in[0].numel()), "numel(in)"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      std::fill(y, y + ctx.output.numel(), T(0));
      // Serial, in x's row-major order: every output element sums its inputs in a fixed order.
      // The reductions it serves (bias gradients of linear layers) are small.
      const std::int64_t inner = plan_.inner();
      const std::int64_t rows = inner ? ctx.inputs[0].numel() / inner : 0;
      const std::int64_t sy = plan_.rank ? plan_.b_stride[static_cast<std::size_t>(plan_.rank - 1)] : 0;
      for (std::int64_t r = 0; r < rows; ++r) {
        std::int64_t ox, oy;
        plan_.row_offsets(r, ox, oy);
        const T* xr = x + r * inner;
        T* yr = y + oy;
        if (sy) {
          for (std::int64_t i = 0; i < inner; ++i) yr[i] += xr[i];
        } else {
          T s = 0;
          for (std::int64_t i = 0; i < inner; ++i) s += xr[i];
          yr[0] += s;
        }
      }
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    return {broadcast_to(g, in[0].shape())};
  }

 private:
  detail::BroadcastPlan plan_;  // a = x, b = out, both indexed over x's shape
  Shape out_;
};
TBGRAD_REGISTER_OPS(SumToOp);

class BroadcastToOp final : public Op {
 public:
  BroadcastToOp(const Shape& x, const Shape& out) : plan_(out, x, out) {}
  static constexpr OpTraits kKinds[] = {{.name = "broadcast_to"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override { return {0, "copy"}; }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      const std::int64_t inner = plan_.inner();
      const std::int64_t rows = inner ? ctx.output.numel() / inner : 0;
      const std::int64_t sx = plan_.rank ? plan_.b_stride[static_cast<std::size_t>(plan_.rank - 1)] : 0;
      parallel_for(rows, std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(inner, 1)),
                   [&](std::int64_t lo, std::int64_t hi) {
                     for (std::int64_t r = lo; r < hi; ++r) {
                       std::int64_t oy, ox;
                       plan_.row_offsets(r, oy, ox);
                       T* yr = y + r * inner;
                       const T* xr = x + ox;
                       if (sx) {
                         std::copy(xr, xr + inner, yr);
                       } else {
                         std::fill(yr, yr + inner, xr[0]);
                       }
                     }
                   });
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    return {sum_to(g, in[0].shape())};
  }

 private:
  detail::BroadcastPlan plan_;  // a = out, b = x, indexed over out's shape
};
TBGRAD_REGISTER_OPS(BroadcastToOp);

// Checks that `small` broadcasts to `big` and returns a message otherwise.
bool broadcasts_to(const Shape& small, const Shape& big) {
  if (small.rank() > big.rank()) return false;
  for (int i = 0; i < small.rank(); ++i) {
    const std::int64_t d = small[i];
    const std::int64_t D = big[i + big.rank() - small.rank()];
    if (d != 1 && d != D) return false;
  }
  return true;
}

}  // namespace

Value sum(Value x) {
  if (!x.valid()) shape_error("sum", "input is an invalid (empty) Value");
  detail::require_float("sum", x);
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<SumOp>(), ins, Shape{}, x.dtype());
}

Value mean(Value x) {
  if (!x.valid()) shape_error("mean", "input is an invalid (empty) Value");
  detail::require_float("mean", x);
  const std::int64_t n = x.shape().numel();
  if (n == 0) shape_error("mean", "input " + x.describe() + " has no elements");
  return scale(sum(x), 1.0 / static_cast<double>(n));
}

Value sum_to(Value x, Shape shape) {
  if (!x.valid()) shape_error("sum_to", "input is an invalid (empty) Value");
  detail::require_float("sum_to", x);
  if (x.shape() == shape) return x;
  if (!broadcasts_to(shape, x.shape())) {
    shape_error("sum_to", "cannot sum " + x.describe() + " down to " + shape.str() +
                              ": each target dimension must be 1 or equal x's trailing dimension");
  }
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<SumToOp>(x.shape(), shape), ins, shape, x.dtype());
}

Value broadcast_to(Value x, Shape shape) {
  if (!x.valid()) shape_error("broadcast_to", "input is an invalid (empty) Value");
  detail::require_float("broadcast_to", x);
  if (x.shape() == shape) return x;
  if (!broadcasts_to(x.shape(), shape)) {
    shape_error("broadcast_to", "cannot broadcast " + x.describe() + " to " + shape.str() +
                                    ": each dimension must be 1 or equal the target's");
  }
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<BroadcastToOp>(x.shape(), shape), ins, shape,
                          x.dtype());
}

}  // namespace tbgrad
