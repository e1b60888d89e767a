// Reductions over a list of axes: sum, mean, max (torch.amax) and var, with keep-dims.
//
// The reduced axes and the kept ones are each merged where they are adjacent in x (size-1 axes
// dropped), so a kernel sees at most a few groups of each. Every output element is computed by
// one task, which visits its reduced elements in x's row-major order and accumulates in double:
// the result does not depend on the thread count (Note [Determinism] in graph/parallel.hpp).
// When the last group of x is kept (a reduction over leading or middle axes, [N, C] -> [C]), a
// task handles a block of contiguous output elements at once and walks x's rows in order, each
// element still summing its inputs in the same order.
#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "graph/parallel.hpp"
#include "ops/axes.hpp"
#include "ops/elementwise.hpp"
#include "ops/kernel_util.hpp"
#include "ops/reduce.hpp"
#include "ops/shape.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;
constexpr int kMaxRank = Shape::kMaxRank;

// Contiguous output elements a task of the kept-inner path handles, and the elements a task
// should at least read.
constexpr std::int64_t kInnerBlock = 512;
constexpr std::int64_t kReduceGrain = 32768;

// x's axes as merged groups: the kept ones (in order, the output's layout) and the reduced ones.
struct ReducePlan {
  int nk = 0, nr = 0;
  std::array<std::int64_t, kMaxRank> ksize{}, kstride{}, rsize{}, rstride{};
  std::int64_t out_numel = 1, red_numel = 1;
  // > 0 when x's last group is kept: its size (stride 1), the length of the runs the kernel
  // walks in the kept-inner path; 0 otherwise.
  std::int64_t inner = 0;

  ReducePlan(const Shape& x, const std::array<bool, kMaxRank>& reduced) {
    const auto st = detail::strides_of(x);
    int last = -1;  // the flag of the last group: 0 kept, 1 reduced
    for (int i = 0; i < x.rank(); ++i) {
      const std::int64_t d = x[i];
      const bool r = reduced[static_cast<std::size_t>(i)];
      (r ? red_numel : out_numel) *= d;
      if (d == 1) continue;
      const int flag = r ? 1 : 0;
      auto& size = r ? rsize : ksize;
      auto& stride = r ? rstride : kstride;
      int& n = r ? nr : nk;
      if (flag == last) {
        size[static_cast<std::size_t>(n - 1)] *= d;
        stride[static_cast<std::size_t>(n - 1)] = st[static_cast<std::size_t>(i)];
      } else {
        size[static_cast<std::size_t>(n)] = d;
        stride[static_cast<std::size_t>(n)] = st[static_cast<std::size_t>(i)];
        ++n;
      }
      last = flag;
    }
    if (last == 0) inner = ksize[static_cast<std::size_t>(nk - 1)];
  }

  // x's offset of output element (or, in the kept-inner path, output row) `o` over the first
  // `groups` kept groups.
  std::int64_t kept_offset(std::int64_t o, int groups) const {
    std::int64_t off = 0;
    for (int k = groups - 1; k >= 0; --k) {
      const auto u = static_cast<std::size_t>(k);
      off += (o % ksize[u]) * kstride[u];
      o /= ksize[u];
    }
    return off;
  }

  // Calls f(offset) for every reduced element, in x's row-major order.
  template <typename F>
  void for_each_reduced(F&& f) const {
    if (nr == 0) {
      f(std::int64_t{0});
      return;
    }
    const auto lastg = static_cast<std::size_t>(nr - 1);
    const std::int64_t n_last = rsize[lastg], s_last = rstride[lastg];
    std::int64_t outer = 1;
    for (int k = 0; k < nr - 1; ++k) outer *= rsize[static_cast<std::size_t>(k)];
    std::array<std::int64_t, kMaxRank> idx{};
    std::int64_t off = 0;
    for (std::int64_t o = 0; o < outer; ++o) {
      for (std::int64_t j = 0; j < n_last; ++j) f(off + j * s_last);
      for (int k = nr - 2; k >= 0; --k) {
        const auto u = static_cast<std::size_t>(k);
        off += rstride[u];
        if (++idx[u] < rsize[u]) break;
        off -= rstride[u] * rsize[u];
        idx[u] = 0;
      }
    }
  }
};

enum class ReduceKind { kSum, kMean, kMax, kVar };

// The output shape: the reduced axes removed, or kept as 1.
Shape reduced_shape(const Shape& x, const std::array<bool, kMaxRank>& reduced, bool keepdims) {
  std::array<std::int64_t, kMaxRank> d{};
  int n = 0;
  for (int i = 0; i < x.rank(); ++i) {
    if (!reduced[static_cast<std::size_t>(i)]) {
      d[static_cast<std::size_t>(n++)] = x[i];
    } else if (keepdims) {
      d[static_cast<std::size_t>(n++)] = 1;
    }
  }
  return Shape(std::span<const std::int64_t>(d.data(), static_cast<std::size_t>(n)));
}

std::vector<int> mask_to_axes(const std::array<bool, kMaxRank>& reduced, int rank) {
  std::vector<int> axes;
  for (int i = 0; i < rank; ++i) {
    if (reduced[static_cast<std::size_t>(i)]) axes.push_back(i);
  }
  return axes;
}

// One accumulation over each output element's reduced elements, in double. sum and mean: the sum
// (mean scales it by 1/N); max: the maximum, NaN winning; var: sum((x - mean)^2) / (N - c).
class ReduceOp final : public Op {
 public:
  ReduceOp(ReduceKind kind, const Shape& x, const std::array<bool, kMaxRank>& reduced,
           bool keepdims, int correction)
      : kind_(kind),
        plan_(x, reduced),
        reduced_(reduced),
        keepdims_(keepdims),
        correction_(correction),
        rank_(x.rank()) {}

  // By ReduceKind.
  static constexpr OpTraits kKinds[] = {
      {.name = "sum_axes"}, {.name = "mean_axes"}, {.name = "max_axes"}, {.name = "var_axes"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }

  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    const auto n = static_cast<double>(in[0].numel());
    if (kind_ == ReduceKind::kVar) return {4 * n, "4*numel(in)"};
    return {n, "numel(in)"};
  }
  std::size_t workspace_bytes(std::span<const Value>, Value) const override {
    // The kept-inner path's accumulators: one double per output element (two for var).
    if (plan_.inner == 0) return 0;
    return static_cast<std::size_t>(plan_.out_numel) * sizeof(double) *
           (kind_ == ReduceKind::kVar ? 2 : 1);
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      run<T>(ctx.inputs[0].data<T>(), ctx.output.data<T>(), static_cast<double*>(ctx.workspace));
    });
  }

  std::vector<Value> vjp(std::span<const Value> in, Value y, Value g) const override {
    const Value& x = in[0];
    const Shape keep = reduced_shape(x.shape(), reduced_, true);
    const std::vector<int> axes = mask_to_axes(reduced_, rank_);
    switch (kind_) {
      case ReduceKind::kSum:
        return {broadcast_to(reshape(g, keep), x.shape())};
      case ReduceKind::kMean:
        return {broadcast_to(reshape(scale(g, 1.0 / static_cast<double>(plan_.red_numel)), keep),
                             x.shape())};
      case ReduceKind::kMax:
        return {max_backward(x, y, g, axes, keepdims_)};
      case ReduceKind::kVar: {
        // d var / d x = 2 (x - mean) / (N - c).
        const double f = 2.0 / static_cast<double>(plan_.red_numel - correction_);
        return {mul(sub(x, mean(x, axes, true)), reshape(scale(g, f), keep))};
      }
    }
    return {};
  }

 private:
  template <typename T>
  void run(const T* x, T* y, double* acc) const {
    const ReducePlan& p = plan_;
    const std::int64_t n = p.red_numel;
    const double inv_n = 1.0 / static_cast<double>(n);
    const double inv_dof = 1.0 / static_cast<double>(n - correction_);
    // Folds one element into an accumulator, and the accumulator's final value.
    auto finish = [&](double s) {
      switch (kind_) {
        case ReduceKind::kMean:
          return static_cast<T>(s * inv_n);
        case ReduceKind::kVar:
          return static_cast<T>(s * inv_dof);
        default:
          return static_cast<T>(s);
      }
    };
    const bool is_max = kind_ == ReduceKind::kMax;
    auto fold = [is_max](double& a, double v) {
      if (!is_max) {
        a += v;
      } else if (v > a || std::isnan(v)) {
        if (!std::isnan(a)) a = v;
      }
    };
    const double start = is_max ? -HUGE_VAL : 0.0;
    if (p.inner > 0) {
      const std::int64_t inner = p.inner;
      const std::int64_t rows = p.out_numel / inner;
      const std::int64_t blocks = (inner + kInnerBlock - 1) / kInnerBlock;
      const std::int64_t grain =
          std::max<std::int64_t>(1, kReduceGrain / std::max<std::int64_t>(1, n * kInnerBlock));
      parallel_for(rows * blocks, grain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t it = lo; it < hi; ++it) {
          const std::int64_t row = it / blocks;
          const std::int64_t i0 = (it % blocks) * kInnerBlock;
          const std::int64_t i1 = std::min(inner, i0 + kInnerBlock);
          const std::int64_t base = p.kept_offset(row, p.nk - 1);
          double* a = acc + row * inner;
          T* yr = y + row * inner;
          std::fill(a + i0, a + i1, start);
          p.for_each_reduced([&](std::int64_t ro) {
            const T* xr = x + base + ro;
            for (std::int64_t i = i0; i < i1; ++i) fold(a[i], static_cast<double>(xr[i]));
          });
          if (kind_ == ReduceKind::kVar) {
            // Second pass: squared deviations from the mean.
            double* a2 = acc + p.out_numel + row * inner;
            for (std::int64_t i = i0; i < i1; ++i) {
              a[i] *= inv_n;
              a2[i] = 0;
            }
            p.for_each_reduced([&](std::int64_t ro) {
              const T* xr = x + base + ro;
              for (std::int64_t i = i0; i < i1; ++i) {
                const double d = static_cast<double>(xr[i]) - a[i];
                a2[i] += d * d;
              }
            });
            for (std::int64_t i = i0; i < i1; ++i) yr[i] = finish(a2[i]);
          } else {
            for (std::int64_t i = i0; i < i1; ++i) yr[i] = finish(a[i]);
          }
        }
      });
      return;
    }
    const std::int64_t grain = std::max<std::int64_t>(1, kReduceGrain / std::max<std::int64_t>(1, n));
    parallel_for(p.out_numel, grain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t o = lo; o < hi; ++o) {
        const T* xo = x + p.kept_offset(o, p.nk);
        double a = start;
        p.for_each_reduced([&](std::int64_t ro) { fold(a, static_cast<double>(xo[ro])); });
        if (kind_ == ReduceKind::kVar) {
          const double m = a * inv_n;
          double s = 0;
          p.for_each_reduced([&](std::int64_t ro) {
            const double d = static_cast<double>(xo[ro]) - m;
            s += d * d;
          });
          a = s;
        }
        y[o] = finish(a);
      }
    });
  }

  ReduceKind kind_;
  ReducePlan plan_;
  std::array<bool, kMaxRank> reduced_;
  bool keepdims_;
  int correction_;
  int rank_;
};
TBGRAD_REGISTER_OPS(ReduceOp);

// The gradient of max over axes (torch.amax's): the output's gradient split evenly between the
// elements equal to the maximum (NaN counting as equal to a NaN maximum), 0 elsewhere.
class MaxBackwardOp final : public Op {
 public:
  MaxBackwardOp(const Shape& x, const std::array<bool, kMaxRank>& reduced)
      : plan_(x, reduced) {}
  static constexpr OpTraits kKinds[] = {{.name = "max_axes_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {2 * static_cast<double>(in[0].numel()), "2*numel(x)"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      const T* y = ctx.inputs[1].data<T>();
      const T* g = ctx.inputs[2].data<T>();
      T* gx = ctx.output.data<T>();
      const ReducePlan& p = plan_;
      const std::int64_t grain =
          std::max<std::int64_t>(1, kReduceGrain / std::max<std::int64_t>(1, p.red_numel));
      parallel_for(p.out_numel, grain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t o = lo; o < hi; ++o) {
          const std::int64_t base = p.kept_offset(o, p.nk);
          const T m = y[o];
          const bool nan = std::isnan(m);
          auto hit = [&](T v) { return v == m || (nan && std::isnan(v)); };
          std::int64_t count = 0;
          p.for_each_reduced([&](std::int64_t ro) { count += hit(x[base + ro]) ? 1 : 0; });
          const T share = g[o] / static_cast<T>(count);
          p.for_each_reduced([&](std::int64_t ro) {
            gx[base + ro] = hit(x[base + ro]) ? share : T(0);
          });
        }
      });
    });
  }

 private:
  ReducePlan plan_;
};
TBGRAD_REGISTER_OPS(MaxBackwardOp);

// The shared shape rule: x valid and floating, the axes a mask (empty: every axis).
std::array<bool, kMaxRank> reduce_mask(const char* op, const Value& x,
                                       const std::vector<int>& axes) {
  if (!x.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, x);
  if (axes.empty()) {
    std::array<bool, kMaxRank> all{};
    for (int i = 0; i < x.shape().rank(); ++i) all[static_cast<std::size_t>(i)] = true;
    return all;
  }
  return detail::axis_mask(op, x, axes);
}

bool reduces_everything(const Shape& x, const std::array<bool, kMaxRank>& reduced) {
  for (int i = 0; i < x.rank(); ++i) {
    if (!reduced[static_cast<std::size_t>(i)] && x[i] != 1) return false;
  }
  return true;
}

std::int64_t reduced_count(const Shape& x, const std::array<bool, kMaxRank>& reduced) {
  std::int64_t n = 1;
  for (int i = 0; i < x.rank(); ++i) {
    if (reduced[static_cast<std::size_t>(i)]) n *= x[i];
  }
  return n;
}

Value reduce(ReduceKind kind, const char* op, Value x, const std::vector<int>& axes,
             bool keepdims, int correction = 0) {
  const auto mask = reduce_mask(op, x, axes);
  const Shape out = reduced_shape(x.shape(), mask, keepdims);
  const std::int64_t n = reduced_count(x.shape(), mask);
  if (n == 0 && kind != ReduceKind::kSum && out.numel() > 0) {
    shape_error(op, "the axes " + detail::axes_str(axes) + " of " + x.describe() +
                        " hold no elements to reduce");
  }
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<ReduceOp>(kind, x.shape(), mask, keepdims, correction),
                          ins, out, x.dtype());
}

}  // namespace

Value sum(Value x, const std::vector<int>& axes, bool keepdims) {
  const auto mask = reduce_mask("sum", x, axes);
  // Over everything: the chunked full reduction, which runs in parallel over the elements.
  if (reduces_everything(x.shape(), mask) && x.shape().numel() > 0) {
    return reshape(sum(x), reduced_shape(x.shape(), mask, keepdims));
  }
  return reduce(ReduceKind::kSum, "sum", x, axes, keepdims);
}

Value mean(Value x, const std::vector<int>& axes, bool keepdims) {
  const auto mask = reduce_mask("mean", x, axes);
  if (reduces_everything(x.shape(), mask) && x.shape().numel() > 0) {
    return reshape(mean(x), reduced_shape(x.shape(), mask, keepdims));
  }
  return reduce(ReduceKind::kMean, "mean", x, axes, keepdims);
}

Value max(Value x, const std::vector<int>& axes, bool keepdims) {
  return reduce(ReduceKind::kMax, "max", x, axes, keepdims);
}

Value var(Value x, const std::vector<int>& axes, int correction, bool keepdims) {
  const auto mask = reduce_mask("var", x, axes);
  const std::int64_t n = reduced_count(x.shape(), mask);
  if (correction < 0) {
    shape_error("var", "correction " + std::to_string(correction) + " is negative (x " +
                           x.describe() + ")");
  }
  if (n - correction <= 0) {
    shape_error("var", "the axes " + detail::axes_str(axes) + " of " + x.describe() + " hold " +
                           std::to_string(n) + " element(s) per result, no more than the " +
                           "correction " + std::to_string(correction) +
                           " (torch would return nan or inf)");
  }
  return reduce(ReduceKind::kVar, "var", x, axes, keepdims, correction);
}

Value max_backward(Value x, Value y, Value grad, const std::vector<int>& axes, bool keepdims) {
  const char* op = "max_backward";
  detail::require_same_graph(op, x, y);
  detail::require_same_graph(op, x, grad);
  detail::require_same_dtype(op, x, y);
  detail::require_same_dtype(op, x, grad);
  const auto mask = reduce_mask(op, x, axes);
  const Shape out = reduced_shape(x.shape(), mask, keepdims);
  if (!(y.shape() == out) || !(grad.shape() == out)) {
    shape_error(op, "the maximum " + y.describe() + " and its gradient " + grad.describe() +
                        " must have the reduced shape " + out.str() + " of " + x.describe() +
                        " over the axes " + detail::axes_str(axes));
  }
  Value ins[] = {x, y, grad};
  return x.graph().add_op(std::make_shared<MaxBackwardOp>(x.shape(), mask), ins, x.shape(),
                          x.dtype());
}

}  // namespace tbgrad
