#include "ops/pool2d.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "graph/checked.hpp"
#include "graph/parallel.hpp"
#include "ops/kernel_util.hpp"
#include "ops/pool2d_kernels.hpp"
#include "ops/reduce.hpp"
#include "ops/elementwise.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;
using detail::Window2d;

using detail::PoolGeometry;

Pool2dOptions resolved(Pool2dOptions o) {
  if (o.stride.h == 0) o.stride.h = o.kernel.h;
  if (o.stride.w == 0) o.stride.w = o.kernel.w;
  return o;
}

PoolGeometry check_pool(const char* op, const Shape& x, const std::string& x_desc,
                        Pool2dOptions o) {
  if (x.rank() != 4) {
    shape_error(op, "input " + x_desc + " must be [N, C, H, W] (rank 4), got rank " +
                        std::to_string(x.rank()));
  }
  if (o.kernel.h < 1 || o.kernel.w < 1) {
    shape_error(op, "kernel must be >= 1, got " + o.kernel.str());
  }
  o = resolved(o);
  if (o.stride.h < 1 || o.stride.w < 1) {
    shape_error(op, "stride must be >= 1 (or 0 for the kernel size), got " + o.stride.str());
  }
  // padding <= kernel / 2, written so that no 2 * padding overflows an int.
  if (o.padding.h < 0 || o.padding.w < 0 || o.padding.h > o.kernel.h / 2 ||
      o.padding.w > o.kernel.w / 2) {
    shape_error(op, "padding must be between 0 and half the kernel " + o.kernel.str() + ", got " +
                        o.padding.str());
  }
  // Sizes (graph/checked.hpp): the window's area fits in int (average pooling divides by it),
  // the padded planes [N*C, HP, WP] and the window view [N*C, OH, OW, KH, KW] have countable
  // elements.
  const std::string values = "input " + x_desc;
  checked::naming(values, [&] {
    checked::window_area(o.kernel.h, o.kernel.w, op);
    const int hp = checked::padded_extent(x[2], o.padding.h, op, "height");
    const int wp = checked::padded_extent(x[3], o.padding.w, op, "width");
    checked::numel({x[0], x[1], hp, wp}, op);
  });
  PoolGeometry g{x[0] * x[1],
                 x[2],
                 x[3],
                 Window2d::out_size(x[2], o.kernel.h, o.stride.h, o.padding.h),
                 Window2d::out_size(x[3], o.kernel.w, o.stride.w, o.padding.w),
                 {o.kernel.h, o.kernel.w, o.stride.h, o.stride.w, o.padding.h, o.padding.w}};
  if (g.oh < 1 || g.ow < 1) {
    shape_error(op, "kernel " + o.kernel.str() + " with padding " + o.padding.str() +
                        " does not fit input " + x_desc);
  }
  checked::naming(values, [&] {
    checked::numel({g.planes, g.oh, g.ow, o.kernel.h, o.kernel.w}, op);
  });
  return g;
}

// Average pooling's workspace, planes * avg_pool_work(g) elements, is countable, so that
// workspace_bytes() cannot wrap.
void check_avg_workspace(const char* op, const PoolGeometry& g, const std::string& x_desc) {
  checked::naming("input " + x_desc, [&] {
    checked::mul(g.planes, detail::avg_pool_work(g), std::string(op) + " workspace");
  });
}

Pool2dOptions options_of(const Window2d& w) {
  return Pool2dOptions{Pair2(w.kh, w.kw), Pair2(w.sh, w.sw), Pair2(w.ph, w.pw)};
}

using detail::plane_grain;

// Average pooling's kernels (whole planes as flat arrays, Note there) are compiled per SIMD
// target in ops/pool2d_kernels.cpp.

class AvgPool2dOp final : public Op {
 public:
  explicit AvgPool2dOp(PoolGeometry g) : g_(g) {}
  static constexpr OpTraits kKinds[] = {{.name = "avg_pool2d"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override {
    return {static_cast<double>(g_.planes * g_.oh * g_.ow) * g_.win.kh * g_.win.kw,
            "N*C*OH*OW*KH*KW"};
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return static_cast<std::size_t>(g_.planes * detail::avg_pool_work(g_)) *
           dtype_size(in[0].dtype());
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      detail::avg_pool_kernel(g_, ctx.inputs[0].data<T>(), ctx.output.data<T>(),
                              static_cast<T*>(ctx.workspace));
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    return {avg_pool2d_backward(g, in[0].shape(), options_of(g_.win))};
  }

 private:
  PoolGeometry g_;
};
TBGRAD_REGISTER_OPS(AvgPool2dOp);

class AvgPool2dBackwardOp final : public Op {
 public:
  explicit AvgPool2dBackwardOp(PoolGeometry g) : g_(g) {}
  static constexpr OpTraits kKinds[] = {{.name = "avg_pool2d_backward", .accepts_relu_mask = true}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override {
    return {static_cast<double>(g_.planes * g_.oh * g_.ow) * g_.win.kh * g_.win.kw,
            "N*C*OH*OW*KH*KW"};
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return static_cast<std::size_t>(g_.planes * detail::avg_pool_work(g_)) *
           dtype_size(in[0].dtype());
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      detail::avg_pool_backward_kernel(g_, ctx.inputs[0].data<T>(), ctx.output.data<T>(),
                                       static_cast<T*>(ctx.workspace),
                                       detail::output_epilogue<T>(ctx));
    });
  }
  // Linear in the output gradient; its adjoint is average pooling itself.
  std::vector<Value> vjp(std::span<const Value>, Value, Value g) const override {
    return {avg_pool2d(g, options_of(g_.win))};
  }

 private:
  PoolGeometry g_;
};
TBGRAD_REGISTER_OPS(AvgPool2dBackwardOp);

// Visits each output position's window and returns the flat input index of its maximum (first
// maximum in row-major window order), or -1 if the window holds only padding.
template <typename T, typename Fn>
void for_each_argmax(const PoolGeometry& g, const T* xp, Fn fn) {
  const Window2d& wn = g.win;
  for (std::int64_t oy = 0; oy < g.oh; ++oy) {
    const std::int64_t y0 = oy * wn.sh - wn.ph;
    const std::int64_t ky_lo = std::max<std::int64_t>(0, -y0);
    const std::int64_t ky_hi = std::min<std::int64_t>(wn.kh, g.h - y0);
    for (std::int64_t ox = 0; ox < g.ow; ++ox) {
      const std::int64_t x0 = ox * wn.sw - wn.pw;
      const std::int64_t kx_lo = std::max<std::int64_t>(0, -x0);
      const std::int64_t kx_hi = std::min<std::int64_t>(wn.kw, g.w - x0);
      std::int64_t best = -1;
      T best_v = -std::numeric_limits<T>::infinity();
      for (std::int64_t ky = ky_lo; ky < ky_hi; ++ky) {
        const std::int64_t row = (y0 + ky) * g.w + x0;
        for (std::int64_t kx = kx_lo; kx < kx_hi; ++kx) {
          const T v = xp[row + kx];
          // A NaN anywhere in the window wins (the first one), as in PyTorch.
          if (best < 0 || v > best_v || (std::isnan(v) && !std::isnan(best_v))) {
            best_v = v;
            best = row + kx;
          }
        }
      }
      fn(oy * g.ow + ox, best, best_v);
    }
  }
}

class MaxPool2dOp final : public Op {
 public:
  explicit MaxPool2dOp(PoolGeometry g) : g_(g) {}
  static constexpr OpTraits kKinds[] = {{.name = "max_pool2d"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override {
    return {static_cast<double>(g_.planes * g_.oh * g_.ow) * g_.win.kh * g_.win.kw,
            "N*C*OH*OW*KH*KW"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      parallel_for(g_.planes, plane_grain(g_), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t p = lo; p < hi; ++p) {
          T* yp = y + p * g_.oh * g_.ow;
          for_each_argmax(g_, x + p * g_.h * g_.w,
                          [&](std::int64_t o, std::int64_t, T v) { yp[o] = v; });
        }
      });
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    return {max_pool2d_backward(in[0], g, options_of(g_.win))};
  }

 private:
  PoolGeometry g_;
};
TBGRAD_REGISTER_OPS(MaxPool2dOp);

class MaxPool2dBackwardOp final : public Op {
 public:
  explicit MaxPool2dBackwardOp(PoolGeometry g) : g_(g) {}
  static constexpr OpTraits kKinds[] = {{.name = "max_pool2d_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override {
    return {static_cast<double>(g_.planes * g_.oh * g_.ow) * g_.win.kh * g_.win.kw,
            "N*C*OH*OW*KH*KW"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();   // [N, C, H, W]
      const T* gy = ctx.inputs[1].data<T>();  // [N, C, OH, OW]
      T* gx = ctx.output.data<T>();           // [N, C, H, W]
      parallel_for(g_.planes, plane_grain(g_), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t p = lo; p < hi; ++p) {
          T* xp = gx + p * g_.h * g_.w;
          const T* gp = gy + p * g_.oh * g_.ow;
          std::fill(xp, xp + g_.h * g_.w, T(0));
          // Overlapping windows may pick the same input: the gradients add up.
          for_each_argmax(g_, x + p * g_.h * g_.w, [&](std::int64_t o, std::int64_t i, T) {
            if (i >= 0) xp[i] += gp[o];
          });
        }
      });
    });
  }

 private:
  PoolGeometry g_;
};
TBGRAD_REGISTER_OPS(MaxPool2dBackwardOp);

// ---------------------------------------------------------------------------------------------
// Global pooling: one task per block of planes, each plane reduced in a fixed order (kLanes
// interleaved partial results, then those in order, then the tail): the same bits for any
// thread count, and loops the compiler vectorises.
// ---------------------------------------------------------------------------------------------

constexpr std::int64_t kLanes = 8;

std::int64_t global_grain(std::int64_t plane) {
  return std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(1, plane));
}

template <typename T>
T plane_sum(const T* __restrict p, std::int64_t n) {
  T lane[kLanes] = {};
  const std::int64_t body = n / kLanes * kLanes;
  for (std::int64_t i = 0; i < body; i += kLanes) {
    for (std::int64_t j = 0; j < kLanes; ++j) lane[j] += p[i + j];
  }
  T sum = 0;
  for (std::int64_t j = 0; j < kLanes; ++j) sum += lane[j];
  for (std::int64_t i = body; i < n; ++i) sum += p[i];
  return sum;
}

// The maximum; NaN if the plane holds one (a NaN, once taken, is never replaced: v > NaN is
// false).
template <typename T>
T plane_max(const T* __restrict p, std::int64_t n) {
  constexpr T kLowest = -std::numeric_limits<T>::infinity();
  T lane[kLanes];
  for (std::int64_t j = 0; j < kLanes; ++j) lane[j] = kLowest;
  const std::int64_t body = n / kLanes * kLanes;
  for (std::int64_t i = 0; i < body; i += kLanes) {
    for (std::int64_t j = 0; j < kLanes; ++j) {
      const T v = p[i + j];
      lane[j] = (v > lane[j] || v != v) ? v : lane[j];
    }
  }
  T best = kLowest;
  for (std::int64_t j = 0; j < kLanes; ++j) best = (lane[j] > best || lane[j] != lane[j]) ? lane[j] : best;
  for (std::int64_t i = body; i < n; ++i) best = (p[i] > best || p[i] != p[i]) ? p[i] : best;
  return best;
}

// The index of the element that takes global_max_pool2d's gradient: the first maximum, or the
// last NaN (PyTorch's adaptive_max_pool2d: `val > maxval || isnan(val)` replaces the maximum).
template <typename T>
std::int64_t plane_argmax(const T* p, std::int64_t n) {
  std::int64_t best = 0;
  T best_v = p[0];
  for (std::int64_t i = 1; i < n; ++i) {
    if (p[i] > best_v || std::isnan(p[i])) {
      best_v = p[i];
      best = i;
    }
  }
  return best;
}

enum class GlobalPool { kAvg, kMax };

class GlobalPool2dOp final : public Op {
 public:
  explicit GlobalPool2dOp(GlobalPool kind) : kind_(kind) {}
  static constexpr OpTraits kKinds[] = {{.name = "global_avg_pool2d"},
                                        {.name = "global_max_pool2d"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {static_cast<double>(in[0].numel()), "N*C*H*W"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const Shape& s = ctx.inputs[0].shape();
      const std::int64_t plane = s[2] * s[3];
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      parallel_for(s[0] * s[1], global_grain(plane), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t p = lo; p < hi; ++p) {
          y[p] = kind_ == GlobalPool::kAvg ? plane_sum(x + p * plane, plane) / static_cast<T>(plane)
                                           : plane_max(x + p * plane, plane);
        }
      });
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Shape& s = in[0].shape();
    if (kind_ == GlobalPool::kMax) return {global_max_pool2d_backward(in[0], g)};
    return {broadcast_to(scale(g, 1.0 / static_cast<double>(s[2] * s[3])), s)};
  }

 private:
  GlobalPool kind_;
};
TBGRAD_REGISTER_OPS(GlobalPool2dOp);

class GlobalMaxPool2dBackwardOp final : public Op {
 public:
  static constexpr OpTraits kKinds[] = {{.name = "global_max_pool2d_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {static_cast<double>(in[0].numel()), "N*C*H*W"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const Shape& s = ctx.inputs[0].shape();
      const std::int64_t plane = s[2] * s[3];
      const T* x = ctx.inputs[0].data<T>();   // [N, C, H, W]
      const T* gy = ctx.inputs[1].data<T>();  // [N, C, 1, 1]
      T* gx = ctx.output.data<T>();           // [N, C, H, W]
      parallel_for(s[0] * s[1], global_grain(plane), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t p = lo; p < hi; ++p) {
          T* gp = gx + p * plane;
          std::fill(gp, gp + plane, T(0));
          gp[plane_argmax(x + p * plane, plane)] = gy[p];
        }
      });
    });
  }
};
TBGRAD_REGISTER_OPS(GlobalMaxPool2dBackwardOp);

Value global_pool(GlobalPool kind, const char* op, Value x) {
  if (!x.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, x);
  const Shape& s = x.shape();
  if (s.rank() != 4) {
    shape_error(op, "input " + x.describe() + " must be [N, C, H, W] (rank 4), got rank " +
                        std::to_string(s.rank()));
  }
  if (s[2] < 1 || s[3] < 1) {
    shape_error(op, "input " + x.describe() + " has an empty plane: nothing to pool");
  }
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<GlobalPool2dOp>(kind), ins, Shape{s[0], s[1], 1, 1},
                          x.dtype());
}

}  // namespace

Value global_avg_pool2d(Value x) {
  return global_pool(GlobalPool::kAvg, "global_avg_pool2d", x);
}

Value global_max_pool2d(Value x) {
  return global_pool(GlobalPool::kMax, "global_max_pool2d", x);
}

Value global_max_pool2d_backward(Value x, Value grad_out) {
  const char* op = "global_max_pool2d_backward";
  detail::require_same_graph(op, x, grad_out);
  detail::require_float(op, x);
  detail::require_same_dtype(op, x, grad_out);
  const Shape& s = x.shape();
  if (s.rank() != 4 || s[2] < 1 || s[3] < 1) {
    shape_error(op, "input " + x.describe() + " must be [N, C, H, W] (rank 4) with H, W >= 1");
  }
  const Shape expect{s[0], s[1], 1, 1};
  if (!(grad_out.shape() == expect)) {
    shape_error(op, "output gradient " + grad_out.describe() + " must be " + expect.str());
  }
  Value ins[] = {x, grad_out};
  return x.graph().add_op(std::make_shared<GlobalMaxPool2dBackwardOp>(), ins, s, x.dtype());
}

Value avg_pool2d(Value x, Pool2dOptions options) {
  if (!x.valid()) shape_error("avg_pool2d", "input is an invalid (empty) Value");
  detail::require_float("avg_pool2d", x);
  PoolGeometry g = check_pool("avg_pool2d", x.shape(), x.describe(), options);
  check_avg_workspace("avg_pool2d", g, x.describe());
  Value ins[] = {x};
  const Shape& s = x.shape();
  return x.graph().add_op(std::make_shared<AvgPool2dOp>(g), ins, Shape{s[0], s[1], g.oh, g.ow},
                          x.dtype());
}

Value max_pool2d(Value x, Pool2dOptions options) {
  if (!x.valid()) shape_error("max_pool2d", "input is an invalid (empty) Value");
  detail::require_float("max_pool2d", x);
  PoolGeometry g = check_pool("max_pool2d", x.shape(), x.describe(), options);
  Value ins[] = {x};
  const Shape& s = x.shape();
  return x.graph().add_op(std::make_shared<MaxPool2dOp>(g), ins, Shape{s[0], s[1], g.oh, g.ow},
                          x.dtype());
}

Value avg_pool2d_backward(Value grad_out, Shape input_shape, Pool2dOptions options) {
  const char* op = "avg_pool2d_backward";
  if (!grad_out.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, grad_out);
  PoolGeometry g = check_pool(op, input_shape, input_shape.str(), options);
  check_avg_workspace(op, g, input_shape.str());
  const Shape expect{input_shape[0], input_shape[1], g.oh, g.ow};  // rank 4: check_pool
  if (!(grad_out.shape() == expect)) {
    shape_error(op, "output gradient " + grad_out.describe() + " must be " + expect.str());
  }
  Value ins[] = {grad_out};
  return grad_out.graph().add_op(std::make_shared<AvgPool2dBackwardOp>(g), ins, input_shape,
                                 grad_out.dtype());
}

Value max_pool2d_backward(Value x, Value grad_out, Pool2dOptions options) {
  const char* op = "max_pool2d_backward";
  detail::require_same_graph(op, x, grad_out);
  detail::require_same_dtype(op, x, grad_out);
  PoolGeometry g = check_pool(op, x.shape(), x.describe(), options);
  const Shape& s = x.shape();
  const Shape expect{s[0], s[1], g.oh, g.ow};
  if (!(grad_out.shape() == expect)) {
    shape_error(op, "output gradient " + grad_out.describe() + " must be " + expect.str());
  }
  Value ins[] = {x, grad_out};
  return x.graph().add_op(std::make_shared<MaxPool2dBackwardOp>(g), ins, s, x.dtype());
}

}  // namespace tbgrad
