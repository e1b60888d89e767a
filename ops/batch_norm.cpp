#include "ops/batch_norm.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "ops/batch_norm_kernels.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

// Elements per task below which splitting costs more than it saves (as ops/elementwise.cpp's).
constexpr std::int64_t kGrain = 16384;

// x [N, C, *] as N * C rows of S contiguous elements; row r is example r / C, channel r % C.
struct Geometry {
  std::int64_t n = 0, c = 0, s = 0;
  explicit Geometry(const Shape& x) : n(x[0]), c(x[1]) {
    s = n * c != 0 ? x.numel() / (n * c) : 0;
  }
  std::int64_t rows() const { return n * c; }
  std::int64_t m() const { return n * s; }  // values per channel
  std::int64_t grain() const { return std::max<std::int64_t>(1, kGrain / std::max<std::int64_t>(s, 1)); }
  detail::BnRows kernel_rows() const { return {rows(), c, s, grain()}; }
};

// The workspace: four partial sums per row, then the per-channel tables.
struct Scratch {
  double* p;  // [rows, 4]
  double *mean, *var, *invstd;
  double* sums;  // [4, C]: the channel sums of the partials
  double *t1, *t2, *t3;  // tables of the kernels' per-channel factors
  Scratch(void* ws, const Geometry& g) {
    p = static_cast<double*>(ws);
    mean = p + 4 * g.rows();
    var = mean + g.c;
    invstd = var + g.c;
    sums = invstd + g.c;
    t1 = sums + 4 * g.c;
    t2 = t1 + g.c;
    t3 = t2 + g.c;
  }
  static std::size_t bytes(const Shape& x) {
    const Geometry g(x);
    return static_cast<std::size_t>(4 * g.rows() + 10 * g.c) * sizeof(double);
  }
};

// Note [Batch statistics]: sc.sums[k * C + c] = the sum over the channel's rows, in example
// order, of the rows' moments (each in the fixed order of Note [Batch norm kernels] in
// ops/batch_norm_kernels.cpp). The rows are summed in parallel,
// each into its own slot; the slots are added serially: the same bits for any thread count.
template <typename T>
void channel_moments(const Geometry& g, const T* x, const T* gy, Scratch& sc) {
  detail::batch_norm_row_moments_kernel(g.kernel_rows(), x, gy, sc.p);
  std::fill(sc.sums, sc.sums + 4 * g.c, 0.0);
  for (std::int64_t n = 0; n < g.n; ++n) {
    for (std::int64_t c = 0; c < g.c; ++c) {
      const double* p = sc.p + 4 * (n * g.c + c);
      for (int k = 0; k < 4; ++k) sc.sums[k * g.c + c] += p[k];
    }
  }
}

// The batch's mean, biased variance and 1 / sqrt(variance + eps) per channel from the moments
// channel_moments left in sc.sums: the variance as E[x^2] - mean^2, in double, one pass over x
// (its rounding error relative to the variance is about 1e-16 * (mean / stddev)^2: negligible
// for the float values it normalises unless a channel's mean is 10^4 of its spread or more).
void batch_stats(const Geometry& g, double eps, Scratch& sc) {
  const auto m = static_cast<double>(g.m());
  for (std::int64_t c = 0; c < g.c; ++c) {
    const double mean = sc.sums[c] / m;
    sc.mean[c] = mean;
    sc.var[c] = std::max(0.0, sc.sums[g.c + c] / m - mean * mean);
    sc.invstd[c] = 1.0 / std::sqrt(sc.var[c] + eps);
  }
}

// The running statistics as the mean and invstd of evaluation mode.
template <typename T>
void running_stats(const Geometry& g, const T* rm, const T* rv, double eps, Scratch& sc) {
  for (std::int64_t c = 0; c < g.c; ++c) {
    sc.mean[c] = static_cast<double>(rm[c]);
    sc.invstd[c] = 1.0 / std::sqrt(static_cast<double>(rv[c]) + eps);
  }
}

// Training with a single value per channel: its variance is undefined (PyTorch refuses too).
void require_values_to_train(const Geometry& g, const Shape& x, const char* op) {
  if (g.m() <= 1) {
    throw Error(std::string(op) + ": training needs more than one value per channel, got input " +
                x.str() + " (evaluation mode normalises with the running statistics)");
  }
}

OpCost pass_cost(std::span<const Shape> in, double per_element, const char* formula) {
  return {per_element * static_cast<double>(in[0].numel()), formula};
}

class BatchNormOp final : public Op {
 public:
  explicit BatchNormOp(BatchNormOptions o) : o_(o) {}
  static constexpr OpTraits kKinds[] = {{.name = "batch_norm", .batch_wide = true}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return pass_cost(in, 6, "6 numel(x): the sums of x and x^2, scale and shift");
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return Scratch::bytes(in[0].shape());
  }
  void forward(const KernelContext& ctx) const override {
    if (ctx.output.numel() == 0) return;
    const Geometry g(ctx.inputs[0].shape());
    const bool training = ctx.run_info().training;
    if (training) require_values_to_train(g, ctx.inputs[0].shape(), "batch_norm");
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      const T* gamma = ctx.inputs[1].data<T>();
      const T* beta = ctx.inputs[2].data<T>();
      T* rm = ctx.inputs[3].data<T>();
      T* rv = ctx.inputs[4].data<T>();
      T* y = ctx.output.data<T>();
      Scratch sc(ctx.workspace, g);
      if (training) {
        channel_moments(g, x, static_cast<const T*>(nullptr), sc);
        batch_stats(g, o_.eps, sc);
        const double m = static_cast<double>(g.m());
        const double unbias = m / (m - 1);
        for (std::int64_t c = 0; c < g.c; ++c) {
          rm[c] = static_cast<T>((1 - o_.momentum) * static_cast<double>(rm[c]) +
                                 o_.momentum * sc.mean[c]);
          rv[c] = static_cast<T>((1 - o_.momentum) * static_cast<double>(rv[c]) +
                                 o_.momentum * sc.var[c] * unbias);
        }
      } else {
        running_stats(g, rm, rv, o_.eps, sc);
      }
      // y = x * a + b per channel: a = gamma * invstd, b = beta - mean * a.
      for (std::int64_t c = 0; c < g.c; ++c) {
        const double a = static_cast<double>(gamma[c]) * sc.invstd[c];
        sc.t1[c] = a;
        sc.t2[c] = static_cast<double>(beta[c]) - sc.mean[c] * a;
      }
      detail::batch_norm_scale_shift_kernel(g.kernel_rows(), x, sc.t1, sc.t2, y);
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    return {batch_norm_backward_input(in[0], in[1], in[3], in[4], g, o_),
            batch_norm_backward_weight(in[0], in[3], in[4], g, o_), batch_norm_backward_bias(g),
            Value(), Value()};
  }

 private:
  BatchNormOptions o_;
};
TBGRAD_REGISTER_OPS(BatchNormOp);

enum class BackwardKind { kInput, kWeight, kBias };

// Inputs: kInput (x, gamma, rm, rv, g); kWeight (x, rm, rv, g); kBias (g).
class BatchNormBackwardOp final : public Op {
 public:
  BatchNormBackwardOp(BackwardKind kind, BatchNormOptions o) : kind_(kind), o_(o) {}
  // By BackwardKind.
  static constexpr OpTraits kKinds[] = {
      {.name = "batch_norm_backward_input", .has_vjp = false, .batch_wide = true},
      {.name = "batch_norm_backward_weight", .has_vjp = false, .batch_wide = true},
      {.name = "batch_norm_backward_bias", .has_vjp = false, .batch_wide = true}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    switch (kind_) {
      case BackwardKind::kInput:
        return pass_cost(in, 12, "12 numel(x): the sums of x, x^2, g, g*x and the gradient");
      case BackwardKind::kWeight:
        return pass_cost(in, 7, "7 numel(x): the sums of x, x^2, g and g*x");
      case BackwardKind::kBias:
        return pass_cost(in, 1, "numel(grad): a sum");
    }
    return {};
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return Scratch::bytes(in[0].shape());
  }
  void forward(const KernelContext& ctx) const override {
    const Tensor& grad = ctx.inputs.back();
    const Geometry g(grad.shape());
    const bool training = ctx.run_info().training;
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      T* out = ctx.output.data<T>();
      Scratch sc(ctx.workspace, g);
      const T* gy = grad.data<T>();
      if (kind_ == BackwardKind::kBias) {
        // The rows' sums in parallel, each into its slot, added in example order.
        detail::batch_norm_row_sum_kernel(g.kernel_rows(), gy, sc.p);
        std::fill(sc.sums, sc.sums + g.c, 0.0);
        for (std::int64_t n = 0; n < g.n; ++n) {
          for (std::int64_t c = 0; c < g.c; ++c) sc.sums[c] += sc.p[n * g.c + c];
        }
        for (std::int64_t c = 0; c < g.c; ++c) out[c] = static_cast<T>(sc.sums[c]);
        return;
      }
      if (g.rows() == 0) {
        std::fill(out, out + ctx.output.numel(), T(0));
        return;
      }
      const T* x = ctx.inputs[0].data<T>();
      const std::size_t stats = kind_ == BackwardKind::kInput ? 2 : 1;  // rm's slot
      // One pass: the moments of x (the batch's statistics in training) and sums[2][c] = the
      // sum of g, sums[3][c] = of g * x, over the channel.
      if (training) require_values_to_train(g, grad.shape(), kKinds[static_cast<int>(kind_)].name);
      channel_moments(g, x, gy, sc);
      if (training) {
        batch_stats(g, o_.eps, sc);
      } else {
        running_stats(g, ctx.inputs[stats].data<T>(), ctx.inputs[stats + 1].data<T>(), o_.eps,
                      sc);
      }
      // t1[c] = the sum of g, t2[c] = the sum of g * (x - mean).
      for (std::int64_t c = 0; c < g.c; ++c) {
        sc.t1[c] = sc.sums[2 * g.c + c];
        sc.t2[c] = sc.sums[3 * g.c + c] - sc.mean[c] * sc.t1[c];
      }
      if (kind_ == BackwardKind::kWeight) {
        for (std::int64_t c = 0; c < g.c; ++c) out[c] = static_cast<T>(sc.t2[c] * sc.invstd[c]);
        return;
      }
      // dx = gamma * invstd * (g - sum_g / M - (x - mean) * invstd^2 * sum_gx / M) in training;
      // dx = gamma * invstd * g in evaluation (the statistics do not depend on x).
      const T* gamma = ctx.inputs[1].data<T>();
      const auto m = static_cast<double>(g.m());
      for (std::int64_t c = 0; c < g.c; ++c) {
        const double k = static_cast<double>(gamma[c]) * sc.invstd[c];
        const double mean_g = training ? sc.t1[c] / m : 0.0;
        const double slope = training ? sc.invstd[c] * sc.invstd[c] * sc.t2[c] / m : 0.0;
        sc.t1[c] = k;
        sc.t2[c] = mean_g;
        sc.t3[c] = slope;
      }
      detail::batch_norm_input_grad_kernel(g.kernel_rows(), x, gy, sc.t1, sc.t2, sc.t3, sc.mean,
                                           out);
    });
  }

 private:
  BackwardKind kind_;
  BatchNormOptions o_;
};
TBGRAD_REGISTER_OPS(BatchNormBackwardOp);

// Shape-rule checks.
void require_input(const char* op, const Value& x) {
  if (!x.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, x);
  if (x.shape().rank() < 2) {
    shape_error(op, "input " + x.describe() +
                        " must have rank 2 or more: [N, C] or [N, C, ...] with the channels second");
  }
}

void require_channel_vector(const char* op, const Value& x, const Value& v, const char* what) {
  detail::require_same_graph(op, x, v);
  detail::require_same_dtype(op, x, v);
  const std::int64_t c = x.shape()[1];
  if (!(v.shape() == Shape{c})) {
    shape_error(op, std::string(what) + " " + v.describe() + " must be [" + std::to_string(c) +
                        "], one per channel of " + x.describe());
  }
}

// The running statistics are written by the forward kernel: they must be leaves of the graph.
void require_leaf(const char* op, const Value& v, const char* what) {
  if (v.graph().node(v).kind == NodeKind::kOp) {
    shape_error(op, std::string(what) + " " + v.describe() +
                        " must be a graph leaf (an nn::ParamStore buffer, a constant, a "
                        "parameter or an input): the kernel updates it in place");
  }
}

void require_options(const char* op, const BatchNormOptions& o, const Value& x) {
  if (!(o.momentum >= 0.0 && o.momentum <= 1.0)) {
    shape_error(op, "momentum must be in [0, 1], got " + std::to_string(o.momentum) + " for " +
                        x.describe());
  }
  if (!(o.eps >= 0.0) || !std::isfinite(o.eps)) {
    shape_error(op, "eps must be finite and non-negative, got " + std::to_string(o.eps) +
                        " for " + x.describe());
  }
}

void require_grad(const char* op, const Value& x, const Value& grad) {
  detail::require_same_graph(op, x, grad);
  detail::require_same_dtype(op, x, grad);
  if (!(grad.shape() == x.shape())) {
    shape_error(op, "gradient " + grad.describe() + " must match " + x.describe());
  }
}

}  // namespace

Value batch_norm(Value x, Value gamma, Value beta, Value running_mean, Value running_var,
                 BatchNormOptions options) {
  const char* op = "batch_norm";
  require_input(op, x);
  require_channel_vector(op, x, gamma, "gamma");
  require_channel_vector(op, x, beta, "beta");
  require_channel_vector(op, x, running_mean, "running_mean");
  require_channel_vector(op, x, running_var, "running_var");
  require_leaf(op, running_mean, "running_mean");
  require_leaf(op, running_var, "running_var");
  if (running_mean == running_var) {
    shape_error(op, "running_mean and running_var are the same value " + running_mean.describe());
  }
  require_options(op, options, x);
  Value ins[] = {x, gamma, beta, running_mean, running_var};
  return x.graph().add_op(std::make_shared<BatchNormOp>(options), ins, x.shape(), x.dtype());
}

Value batch_norm_backward_input(Value x, Value gamma, Value running_mean, Value running_var,
                                Value grad, BatchNormOptions options) {
  const char* op = "batch_norm_backward_input";
  require_input(op, x);
  require_channel_vector(op, x, gamma, "gamma");
  require_channel_vector(op, x, running_mean, "running_mean");
  require_channel_vector(op, x, running_var, "running_var");
  require_grad(op, x, grad);
  require_options(op, options, x);
  Value ins[] = {x, gamma, running_mean, running_var, grad};
  return x.graph().add_op(std::make_shared<BatchNormBackwardOp>(BackwardKind::kInput, options),
                          ins, x.shape(), x.dtype());
}

Value batch_norm_backward_weight(Value x, Value running_mean, Value running_var, Value grad,
                                 BatchNormOptions options) {
  const char* op = "batch_norm_backward_weight";
  require_input(op, x);
  require_channel_vector(op, x, running_mean, "running_mean");
  require_channel_vector(op, x, running_var, "running_var");
  require_grad(op, x, grad);
  require_options(op, options, x);
  Value ins[] = {x, running_mean, running_var, grad};
  return x.graph().add_op(std::make_shared<BatchNormBackwardOp>(BackwardKind::kWeight, options),
                          ins, Shape{x.shape()[1]}, x.dtype());
}

Value batch_norm_backward_bias(Value grad) {
  const char* op = "batch_norm_backward_bias";
  require_input(op, grad);
  Value ins[] = {grad};
  return grad.graph().add_op(std::make_shared<BatchNormBackwardOp>(BackwardKind::kBias,
                                                                   BatchNormOptions{}),
                             ins, Shape{grad.shape()[1]}, grad.dtype());
}

}  // namespace tbgrad
