#include "ops/norm.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "graph/parallel.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

// Elements per task below which splitting costs more than it saves (as ops/elementwise.cpp's).
constexpr std::int64_t kGrain = 16384;

enum class Family { kLayer, kGroup };

// Both ops see x as rows() rows of d() contiguous elements, each normalised alone: row r is
// outer index r / groups and group r % groups, made of `chans` channels of `s` contiguous
// elements; channel j of row r has the affine parameters' index (r % groups) * chans + j.
//   layer_norm: outer = the product of the unnormalised axes, groups 1, chans = the product of
//               the normalized shape, s 1 (every element its own weight).
//   group_norm: outer = N, groups, chans = C / groups, s = the product of *.
struct Geometry {
  std::int64_t outer = 0, groups = 1, chans = 0, s = 1;
  std::int64_t rows() const { return outer * groups; }
  std::int64_t d() const { return chans * s; }
  std::int64_t affine() const { return groups * chans; }
  std::int64_t row_grain() const { return std::max<std::int64_t>(1, kGrain / std::max<std::int64_t>(d(), 1)); }
  std::int64_t chan_grain() const {
    return std::max<std::int64_t>(1, kGrain / std::max<std::int64_t>(outer * s, 1));
  }
};

std::int64_t product(const Shape& x, int from, int to) {
  std::int64_t p = 1;
  for (int i = from; i < to; ++i) p *= x[i];
  return p;
}

Geometry geometry(Family f, std::int64_t param, const Shape& x) {
  Geometry g;
  if (f == Family::kLayer) {
    const int k = static_cast<int>(param);
    g.outer = product(x, 0, x.rank() - k);
    g.chans = product(x, x.rank() - k, x.rank());
  } else {
    g.outer = x[0];
    g.groups = param;
    g.chans = x[1] / param;
    g.s = product(x, 2, x.rank());
  }
  return g;
}

// Note [Row statistics]: a sum over a row in a fixed order, kLanes interleaved partial sums
// (element i into lane i % kLanes, a loop the compiler may vectorise without reordering any
// lane's additions), the lanes added pairwise, then the tail: the same bits whichever thread
// sums the row and however many there are.
constexpr int kLanes = 8;

template <typename Term>
double fixed_sum(std::int64_t n, const Term& term) {
  double acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += term(i + l);
  }
  double tail = 0;
  for (; i < n; ++i) tail += term(i);
  return (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + tail;
}

struct RowStats {
  double mean = 0, rstd = 0;
};

// The row's mean and 1 / sqrt(biased variance + eps), two passes (the variance from the
// deviations, not from the mean of squares). An empty row has mean 0.
template <typename T>
RowStats row_stats(const T* x, std::int64_t d, double eps) {
  if (d == 0) return {0.0, 1.0 / std::sqrt(eps)};
  const auto n = static_cast<double>(d);
  const double mean = fixed_sum(d, [&](std::int64_t i) { return static_cast<double>(x[i]); }) / n;
  const double var = fixed_sum(d, [&](std::int64_t i) {
                       const double v = static_cast<double>(x[i]) - mean;
                       return v * v;
                     }) /
                     n;
  return {mean, 1.0 / std::sqrt(var + eps)};
}

// The affine parameters as double tables of g.affine() values: `v` or `fill` when absent.
template <typename T>
void affine_table(const Geometry& g, const T* v, double fill, double* out) {
  for (std::int64_t c = 0; c < g.affine(); ++c) out[c] = v ? static_cast<double>(v[c]) : fill;
}

// The op's attributes.
struct Attrs {
  Family family = Family::kLayer;
  std::int64_t param = 1;  // layer_norm: the normalized rank; group_norm: the groups
  double eps = 1e-5;
  bool whole = false;  // layer_norm over every axis of x: batch-wide (Note [Op traits])
};

OpCost pass_cost(std::span<const Shape> in, double per_element, const char* formula) {
  return {per_element * static_cast<double>(in[0].numel()), formula};
}

class NormOp final : public Op {
 public:
  NormOp(Attrs a, bool has_weight, bool has_bias) : a_(a), has_w_(has_weight), has_b_(has_bias) {}
  // By Family; kWhole: layer_norm whose normalized shape is the whole of x (not registered: the
  // same kind as kKinds[0], with the statistics spanning the batch).
  static constexpr OpTraits kKinds[] = {{.name = "layer_norm"}, {.name = "group_norm"}};
  static constexpr OpTraits kWhole = {.name = "layer_norm", .batch_wide = true};
  const OpTraits& traits() const override {
    return a_.whole ? kWhole : kKinds[static_cast<int>(a_.family)];
  }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return pass_cost(in, 7, "7 numel(x): mean, variance, normalisation, scale and shift");
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return static_cast<std::size_t>(2 * geometry(a_.family, a_.param, in[0].shape()).affine()) *
           sizeof(double);
  }
  void forward(const KernelContext& ctx) const override {
    if (ctx.output.numel() == 0) return;
    const Geometry g = geometry(a_.family, a_.param, ctx.inputs[0].shape());
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      const T* w = has_w_ ? ctx.inputs[1].data<T>() : nullptr;
      const T* b = has_b_ ? ctx.inputs[has_w_ ? 2 : 1].data<T>() : nullptr;
      T* y = ctx.output.data<T>();
      auto* wd = static_cast<double*>(ctx.workspace);
      double* bd = wd + g.affine();
      affine_table(g, w, 1.0, wd);
      affine_table(g, b, 0.0, bd);
      const std::int64_t d = g.d();
      parallel_for(g.rows(), g.row_grain(), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t r = lo; r < hi; ++r) {
          const T* xr = x + r * d;
          T* yr = y + r * d;
          const RowStats st = row_stats(xr, d, a_.eps);
          const double* wr = wd + (r % g.groups) * g.chans;
          const double* br = bd + (r % g.groups) * g.chans;
          // y = (x - mean) * (rstd * w) + b, the same expression on both paths.
          if (g.s == 1) {
            for (std::int64_t i = 0; i < d; ++i) {
              yr[i] = static_cast<T>((static_cast<double>(xr[i]) - st.mean) * (st.rstd * wr[i]) +
                                     br[i]);
            }
          } else {
            for (std::int64_t j = 0; j < g.chans; ++j) {
              const double k = st.rstd * wr[j], sh = br[j];
              const T* xj = xr + j * g.s;
              T* yj = yr + j * g.s;
              for (std::int64_t i = 0; i < g.s; ++i) {
                yj[i] = static_cast<T>((static_cast<double>(xj[i]) - st.mean) * k + sh);
              }
            }
          }
        }
      });
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value grad) const override;

 private:
  Attrs a_;
  bool has_w_, has_b_;
};
TBGRAD_REGISTER_OPS(NormOp);

enum class BackwardKind { kInput, kWeight, kBias };

// Inputs: kInput (x, [weight], grad); kWeight (x, grad); kBias (grad).
class NormBackwardOp final : public Op {
 public:
  NormBackwardOp(BackwardKind kind, Attrs a, bool has_weight)
      : kind_(kind), a_(a), has_w_(has_weight) {}
  // By Family, then BackwardKind; kWhole by BackwardKind (layer_norm over the whole of x).
  static constexpr OpTraits kKinds[] = {
      {.name = "layer_norm_backward_input", .has_vjp = false},
      {.name = "layer_norm_backward_weight", .has_vjp = false},
      {.name = "layer_norm_backward_bias", .has_vjp = false},
      {.name = "group_norm_backward_input", .has_vjp = false},
      {.name = "group_norm_backward_weight", .has_vjp = false},
      {.name = "group_norm_backward_bias", .has_vjp = false}};
  static constexpr OpTraits kWhole[] = {
      {.name = "layer_norm_backward_input", .has_vjp = false, .batch_wide = true},
      {.name = "layer_norm_backward_weight", .has_vjp = false, .batch_wide = true},
      {.name = "layer_norm_backward_bias", .has_vjp = false, .batch_wide = true}};
  const OpTraits& traits() const override {
    const int k = static_cast<int>(kind_);
    return a_.whole ? kWhole[k] : kKinds[3 * static_cast<int>(a_.family) + k];
  }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    switch (kind_) {
      case BackwardKind::kInput:
        return pass_cost(in, 12, "12 numel(x): statistics, two sums and the gradient");
      case BackwardKind::kWeight:
        return pass_cost(in, 7, "7 numel(x): statistics and a sum of products");
      case BackwardKind::kBias:
        return pass_cost(in, 1, "numel(grad): a sum");
    }
    return {};
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    const Geometry g = geometry(a_.family, a_.param, in.back().shape());
    return static_cast<std::size_t>(2 * g.rows() + g.affine()) * sizeof(double);
  }
  void forward(const KernelContext& ctx) const override {
    const Tensor& grad = ctx.inputs.back();
    const Geometry g = geometry(a_.family, a_.param, grad.shape());
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      T* out = ctx.output.data<T>();
      const T* gy = grad.data<T>();
      auto* mean = static_cast<double*>(ctx.workspace);
      double* rstd = mean + g.rows();
      double* acc = rstd + g.rows();
      if (kind_ == BackwardKind::kInput) {
        input_gradient(g, ctx.inputs[0].data<T>(), has_w_ ? ctx.inputs[1].data<T>() : nullptr, gy,
                       acc, out);
        return;
      }
      const T* x = kind_ == BackwardKind::kWeight ? ctx.inputs[0].data<T>() : nullptr;
      if (x != nullptr) {
        parallel_for(g.rows(), g.row_grain(), [&](std::int64_t lo, std::int64_t hi) {
          for (std::int64_t r = lo; r < hi; ++r) {
            const RowStats st = row_stats(x + r * g.d(), g.d(), a_.eps);
            mean[r] = st.mean;
            rstd[r] = st.rstd;
          }
        });
      }
      affine_sums(g, x, gy, mean, rstd, acc);
      for (std::int64_t c = 0; c < g.affine(); ++c) out[c] = static_cast<T>(acc[c]);
    });
  }

 private:
  // dx = rstd * (gw - sum(gw) / d - (x - mean) * rstd^2 * sum(gw * (x - mean)) / d) per row,
  // gw = grad * weight.
  template <typename T>
  void input_gradient(const Geometry& g, const T* x, const T* w, const T* gy, double* wd,
                      T* out) const {
    affine_table(g, w, 1.0, wd);
    const std::int64_t d = g.d();
    parallel_for(g.rows(), g.row_grain(), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t r = lo; r < hi; ++r) {
        const T* xr = x + r * d;
        const T* gr = gy + r * d;
        T* dx = out + r * d;
        const RowStats st = row_stats(xr, d, a_.eps);
        const double* wr = wd + (r % g.groups) * g.chans;
        double sg = 0, sgx = 0;
        if (g.s == 1) {
          sg = fixed_sum(d, [&](std::int64_t i) { return static_cast<double>(gr[i]) * wr[i]; });
          sgx = fixed_sum(d, [&](std::int64_t i) {
            return static_cast<double>(gr[i]) * wr[i] * (static_cast<double>(xr[i]) - st.mean);
          });
        } else {
          for (std::int64_t j = 0; j < g.chans; ++j) {
            const T* xj = xr + j * g.s;
            const T* gj = gr + j * g.s;
            sg += wr[j] * fixed_sum(g.s, [&](std::int64_t i) { return static_cast<double>(gj[i]); });
            sgx += wr[j] * fixed_sum(g.s, [&](std::int64_t i) {
                     return static_cast<double>(gj[i]) * (static_cast<double>(xj[i]) - st.mean);
                   });
          }
        }
        const double n = d != 0 ? static_cast<double>(d) : 1.0;
        const double mean_g = sg / n;
        const double slope = st.rstd * st.rstd * sgx / n;
        if (g.s == 1) {
          for (std::int64_t i = 0; i < d; ++i) {
            dx[i] = static_cast<T>(st.rstd * (static_cast<double>(gr[i]) * wr[i] - mean_g -
                                              (static_cast<double>(xr[i]) - st.mean) * slope));
          }
        } else {
          for (std::int64_t j = 0; j < g.chans; ++j) {
            const double wj = wr[j];
            const T* xj = xr + j * g.s;
            const T* gj = gr + j * g.s;
            T* dj = dx + j * g.s;
            for (std::int64_t i = 0; i < g.s; ++i) {
              dj[i] = static_cast<T>(st.rstd * (static_cast<double>(gj[i]) * wj - mean_g -
                                                (static_cast<double>(xj[i]) - st.mean) * slope));
            }
          }
        }
      }
    });
  }

  // acc[c] = the sum over the rows holding affine index c, in row order, of the sum over its
  // elements of grad * (x - mean) * rstd (x given: the weight's gradient) or of grad (x null:
  // the bias's). Channels are split over the threads, each summed whole by one: a fixed order.
  template <typename T>
  static void affine_sums(const Geometry& g, const T* x, const T* gy, const double* mean,
                          const double* rstd, double* acc) {
    const std::int64_t d = g.d();
    parallel_for(g.affine(), g.chan_grain(), [&](std::int64_t lo, std::int64_t hi) {
      std::fill(acc + lo, acc + hi, 0.0);
      if (g.s == 1 && g.groups == 1) {  // channel c is element c of every row
        for (std::int64_t r = 0; r < g.rows(); ++r) {
          const T* gr = gy + r * d;
          if (x == nullptr) {
            for (std::int64_t c = lo; c < hi; ++c) acc[c] += static_cast<double>(gr[c]);
          } else {
            const T* xr = x + r * d;
            const double mu = mean[r], k = rstd[r];
            for (std::int64_t c = lo; c < hi; ++c) {
              acc[c] += static_cast<double>(gr[c]) * ((static_cast<double>(xr[c]) - mu) * k);
            }
          }
        }
        return;
      }
      for (std::int64_t n = 0; n < g.outer; ++n) {
        for (std::int64_t c = lo; c < hi; ++c) {
          const std::int64_t r = n * g.groups + c / g.chans;
          const std::int64_t at = r * d + (c % g.chans) * g.s;
          const T* gj = gy + at;
          if (x == nullptr) {
            acc[c] += fixed_sum(g.s, [&](std::int64_t i) { return static_cast<double>(gj[i]); });
          } else {
            const T* xj = x + at;
            const double mu = mean[r];
            acc[c] += rstd[r] * fixed_sum(g.s, [&](std::int64_t i) {
                        return static_cast<double>(gj[i]) * (static_cast<double>(xj[i]) - mu);
                      });
          }
        }
      }
    });
  }

  BackwardKind kind_;
  Attrs a_;
  bool has_w_;
};
TBGRAD_REGISTER_OPS(NormBackwardOp);

// Shape-rule checks.
void require_x(const char* op, const Value& x) {
  if (!x.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, x);
}

void require_eps(const char* op, double eps, const Value& x) {
  if (!(eps >= 0.0) || !std::isfinite(eps)) {
    shape_error(op, "eps must be finite and non-negative, got " + std::to_string(eps) + " for " +
                        x.describe());
  }
}

void require_grad(const char* op, const Value& x, const Value& grad) {
  if (!grad.valid()) shape_error(op, "gradient is an invalid (empty) Value");
  detail::require_same_graph(op, x, grad);
  detail::require_same_dtype(op, x, grad);
  if (!(grad.shape() == x.shape())) {
    shape_error(op, "gradient " + grad.describe() + " must match " + x.describe());
  }
}

Shape last_axes(const Shape& x, int k) {
  std::vector<std::int64_t> dims;
  for (int i = x.rank() - k; i < x.rank(); ++i) dims.push_back(x[i]);
  return Shape(std::span<const std::int64_t>(dims));
}

// An affine parameter (weight or bias), when given: same graph and dtype, shape `want`.
void require_affine(const char* op, const Value& x, const Value& v, const char* what,
                    const Shape& want, const std::string& of) {
  if (!v.valid()) return;
  detail::require_same_graph(op, x, v);
  detail::require_same_dtype(op, x, v);
  if (!(v.shape() == want)) {
    shape_error(op, std::string(what) + " " + v.describe() + " must be " + want.str() + ", " + of);
  }
}

void require_rank(const char* op, const Value& x, int k) {
  require_x(op, x);
  if (k < 1 || k > x.shape().rank()) {
    shape_error(op, "normalized rank " + std::to_string(k) + " must be from 1 to the rank of " +
                        x.describe() + " (the normalized shape is x's last axes)");
  }
}

Attrs layer_attrs(const Value& x, int k, double eps) {
  return {.family = Family::kLayer, .param = k, .eps = eps, .whole = k == x.shape().rank()};
}

void require_groups(const char* op, const Value& x, std::int64_t groups) {
  require_x(op, x);
  if (x.shape().rank() < 2) {
    shape_error(op, "input " + x.describe() +
                        " must have rank 2 or more: [N, C] or [N, C, ...] with the channels second");
  }
  if (groups < 1) {
    shape_error(op, "groups must be positive, got " + std::to_string(groups) + " for " +
                        x.describe());
  }
  if (x.shape()[1] % groups != 0) {
    shape_error(op, "the channels C = " + std::to_string(x.shape()[1]) + " of " + x.describe() +
                        " must be divisible by groups = " + std::to_string(groups));
  }
}

Attrs group_attrs(std::int64_t groups, double eps) {
  return {.family = Family::kGroup, .param = groups, .eps = eps};
}

Value add_norm(const Attrs& a, Value x, Value w, Value b) {
  std::vector<Value> ins{x};
  if (w.valid()) ins.push_back(w);
  if (b.valid()) ins.push_back(b);
  return x.graph().add_op(std::make_shared<NormOp>(a, w.valid(), b.valid()), ins, x.shape(),
                          x.dtype());
}

std::vector<Value> NormOp::vjp(std::span<const Value> in, Value, Value grad) const {
  const Value x = in[0];
  const Value w = has_w_ ? in[1] : Value();
  std::vector<Value> out;
  if (a_.family == Family::kLayer) {
    const int k = static_cast<int>(a_.param);
    const LayerNormOptions o{.eps = a_.eps};
    out.push_back(layer_norm_backward_input(x, k, w, grad, o));
    if (has_w_) out.push_back(layer_norm_backward_weight(x, k, grad, o));
    if (has_b_) out.push_back(layer_norm_backward_bias(grad, k));
  } else {
    const GroupNormOptions o{.eps = a_.eps};
    out.push_back(group_norm_backward_input(x, a_.param, w, grad, o));
    if (has_w_) out.push_back(group_norm_backward_weight(x, a_.param, grad, o));
    if (has_b_) out.push_back(group_norm_backward_bias(grad));
  }
  return out;
}

}  // namespace

Value layer_norm(Value x, int normalized_rank, Value weight, Value bias, LayerNormOptions options) {
  const char* op = "layer_norm";
  require_rank(op, x, normalized_rank);
  const Shape ns = last_axes(x.shape(), normalized_rank);
  const std::string of = "the normalized shape of " + x.describe();
  require_affine(op, x, weight, "weight", ns, of);
  require_affine(op, x, bias, "bias", ns, of);
  require_eps(op, options.eps, x);
  return add_norm(layer_attrs(x, normalized_rank, options.eps), x, weight, bias);
}

Value layer_norm(Value x, const Shape& normalized_shape, Value weight, Value bias,
                 LayerNormOptions options) {
  const char* op = "layer_norm";
  require_x(op, x);
  const int k = normalized_shape.rank();
  if (k < 1 || k > x.shape().rank() || !(last_axes(x.shape(), k) == normalized_shape)) {
    shape_error(op, "normalized_shape " + normalized_shape.str() +
                        " must be 1 or more of the last dimensions of " + x.describe());
  }
  return layer_norm(x, k, weight, bias, options);
}

Value layer_norm(Value x, std::initializer_list<std::int64_t> normalized_shape, Value weight,
                 Value bias, LayerNormOptions options) {
  return layer_norm(x, Shape(normalized_shape), weight, bias, options);
}

Value group_norm(Value x, std::int64_t groups, Value weight, Value bias, GroupNormOptions options) {
  const char* op = "group_norm";
  require_groups(op, x, groups);
  const Shape cs{x.shape()[1]};
  const std::string of = "one per channel of " + x.describe();
  require_affine(op, x, weight, "weight", cs, of);
  require_affine(op, x, bias, "bias", cs, of);
  require_eps(op, options.eps, x);
  return add_norm(group_attrs(groups, options.eps), x, weight, bias);
}

Value layer_norm_backward_input(Value x, int normalized_rank, Value weight, Value grad,
                                LayerNormOptions options) {
  const char* op = "layer_norm_backward_input";
  require_rank(op, x, normalized_rank);
  require_affine(op, x, weight, "weight", last_axes(x.shape(), normalized_rank),
                 "the normalized shape of " + x.describe());
  require_grad(op, x, grad);
  require_eps(op, options.eps, x);
  std::vector<Value> ins{x};
  if (weight.valid()) ins.push_back(weight);
  ins.push_back(grad);
  return x.graph().add_op(
      std::make_shared<NormBackwardOp>(BackwardKind::kInput,
                                       layer_attrs(x, normalized_rank, options.eps),
                                       weight.valid()),
      ins, x.shape(), x.dtype());
}

Value layer_norm_backward_weight(Value x, int normalized_rank, Value grad,
                                 LayerNormOptions options) {
  const char* op = "layer_norm_backward_weight";
  require_rank(op, x, normalized_rank);
  require_grad(op, x, grad);
  require_eps(op, options.eps, x);
  Value ins[] = {x, grad};
  return x.graph().add_op(
      std::make_shared<NormBackwardOp>(BackwardKind::kWeight,
                                       layer_attrs(x, normalized_rank, options.eps), false),
      ins, last_axes(x.shape(), normalized_rank), x.dtype());
}

Value layer_norm_backward_bias(Value grad, int normalized_rank) {
  const char* op = "layer_norm_backward_bias";
  require_rank(op, grad, normalized_rank);
  Value ins[] = {grad};
  return grad.graph().add_op(
      std::make_shared<NormBackwardOp>(BackwardKind::kBias, layer_attrs(grad, normalized_rank, 0),
                                       false),
      ins, last_axes(grad.shape(), normalized_rank), grad.dtype());
}

Value group_norm_backward_input(Value x, std::int64_t groups, Value weight, Value grad,
                                GroupNormOptions options) {
  const char* op = "group_norm_backward_input";
  require_groups(op, x, groups);
  require_affine(op, x, weight, "weight", Shape{x.shape()[1]},
                 "one per channel of " + x.describe());
  require_grad(op, x, grad);
  require_eps(op, options.eps, x);
  std::vector<Value> ins{x};
  if (weight.valid()) ins.push_back(weight);
  ins.push_back(grad);
  return x.graph().add_op(std::make_shared<NormBackwardOp>(
                              BackwardKind::kInput, group_attrs(groups, options.eps), weight.valid()),
                          ins, x.shape(), x.dtype());
}

Value group_norm_backward_weight(Value x, std::int64_t groups, Value grad,
                                 GroupNormOptions options) {
  const char* op = "group_norm_backward_weight";
  require_groups(op, x, groups);
  require_grad(op, x, grad);
  require_eps(op, options.eps, x);
  Value ins[] = {x, grad};
  return x.graph().add_op(std::make_shared<NormBackwardOp>(
                              BackwardKind::kWeight, group_attrs(groups, options.eps), false),
                          ins, Shape{x.shape()[1]}, x.dtype());
}

Value group_norm_backward_bias(Value grad) {
  const char* op = "group_norm_backward_bias";
  require_groups(op, grad, 1);
  Value ins[] = {grad};
  return grad.graph().add_op(
      std::make_shared<NormBackwardOp>(BackwardKind::kBias, group_attrs(1, 0), false), ins,
      Shape{grad.shape()[1]}, grad.dtype());
}

}  // namespace tbgrad
