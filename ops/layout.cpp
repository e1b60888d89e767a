// Ops that move elements without arithmetic: permute (and transpose), concat, slice (and split)
// and constant padding. Each output element is written by one task, copied from one place (or
// the padding value): the results are exact and do not depend on the thread count.
#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "graph/checked.hpp"
#include "graph/parallel.hpp"
#include "ops/axes.hpp"
#include "ops/kernel_util.hpp"
#include "ops/shape.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;
constexpr int kMaxRank = Shape::kMaxRank;
using Dims = std::array<std::int64_t, kMaxRank>;

// Elements a task should at least copy.
constexpr std::int64_t kCopyGrain = 16384;
// The side of the square tiles permute copies a transposed plane in.
constexpr std::int64_t kTile = 32;

std::int64_t grain_for(std::int64_t elements_per_item) {
  return std::max<std::int64_t>(1, kCopyGrain / std::max<std::int64_t>(1, elements_per_item));
}

std::string order_str(const std::vector<int>& order) { return detail::axes_str(order); }

// ---------------------------------------------------------------------------------------------
// permute
// ---------------------------------------------------------------------------------------------

// y's axes as merged groups: output axis k of size size[k] reads x with stride xs[k] and writes
// y with stride ys[k]. Size-1 axes are dropped and output axes that are adjacent in x merged,
// so a plain reshape has one group and a matrix transpose two.
struct PermutePlan {
  int n = 0;
  Dims size{}, xs{}, ys{};

  PermutePlan(const Shape& x, const std::vector<int>& order) {
    const Dims xst = detail::strides_of(x);
    for (const int a : order) {
      const std::int64_t d = x[a];
      if (d == 1) continue;
      const std::int64_t s = xst[static_cast<std::size_t>(a)];
      // Merge with the previous group when this axis is the one right after it in x's memory:
      // the previous group's innermost stride is this axis's stride times its size.
      if (n > 0 && xs[static_cast<std::size_t>(n - 1)] == s * d) {
        size[static_cast<std::size_t>(n - 1)] *= d;
        xs[static_cast<std::size_t>(n - 1)] = s;
      } else {
        size[static_cast<std::size_t>(n)] = d;
        xs[static_cast<std::size_t>(n)] = s;
        ++n;
      }
    }
    std::int64_t stride = 1;
    for (int k = n - 1; k >= 0; --k) {
      ys[static_cast<std::size_t>(k)] = stride;
      stride *= size[static_cast<std::size_t>(k)];
    }
  }
};

class PermuteOp final : public Op {
 public:
  PermuteOp(const Shape& x, std::vector<int> order) : plan_(x, order), order_(std::move(order)) {}
  static constexpr OpTraits kKinds[] = {{.name = "permute"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override { return {0, "copy"}; }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      copy<T>(ctx.inputs[0].data<T>(), ctx.output.data<T>(), ctx.output.numel());
    });
  }

  // The inverse permutation.
  std::vector<Value> vjp(std::span<const Value>, Value, Value g) const override {
    std::vector<int> inverse(order_.size());
    for (std::size_t k = 0; k < order_.size(); ++k) {
      inverse[static_cast<std::size_t>(order_[k])] = static_cast<int>(k);
    }
    return {permute(g, inverse)};
  }

 private:
  template <typename T>
  void copy(const T* x, T* y, std::int64_t numel) const {
    const PermutePlan& p = plan_;
    if (numel == 0) return;
    const int n = p.n;
    // x's innermost axis is y's innermost too (or there is at most one axis): rows of
    // contiguous elements.
    if (n == 0 || p.xs[static_cast<std::size_t>(n - 1)] == 1) {
      const std::int64_t inner = n ? p.size[static_cast<std::size_t>(n - 1)] : 1;
      const std::int64_t rows = numel / inner;
      parallel_for(rows, grain_for(inner), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t r = lo; r < hi; ++r) {
          std::int64_t off = 0, rem = r;
          for (int k = n - 2; k >= 0; --k) {
            const auto u = static_cast<std::size_t>(k);
            off += (rem % p.size[u]) * p.xs[u];
            rem /= p.size[u];
          }
          std::memcpy(y + r * inner, x + off, static_cast<std::size_t>(inner) * sizeof(T));
        }
      });
      return;
    }
    // Otherwise a transpose of the plane of y's last axis and axis q, x's innermost, copied in
    // square tiles: each tile reads kTile runs of x and writes kTile runs of y, all in cache.
    int q = 0;
    while (p.xs[static_cast<std::size_t>(q)] != 1) ++q;
    const auto uq = static_cast<std::size_t>(q), ul = static_cast<std::size_t>(n - 1);
    const std::int64_t rows_q = p.size[uq], cols = p.size[ul];
    const std::int64_t yq = p.ys[uq], xl = p.xs[ul];
    const std::int64_t tq = (rows_q + kTile - 1) / kTile, tl = (cols + kTile - 1) / kTile;
    const std::int64_t planes = numel / (rows_q * cols);
    parallel_for(planes * tq * tl, grain_for(kTile * kTile), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t it = lo; it < hi; ++it) {
        std::int64_t plane = it / (tq * tl);
        const std::int64_t tile = it % (tq * tl);
        const std::int64_t a0 = (tile / tl) * kTile, b0 = (tile % tl) * kTile;
        const std::int64_t a1 = std::min(rows_q, a0 + kTile), b1 = std::min(cols, b0 + kTile);
        std::int64_t xo = 0, yo = 0;
        for (int k = n - 2; k >= 0; --k) {
          if (k == q) continue;
          const auto u = static_cast<std::size_t>(k);
          const std::int64_t i = plane % p.size[u];
          plane /= p.size[u];
          xo += i * p.xs[u];
          yo += i * p.ys[u];
        }
        for (std::int64_t a = a0; a < a1; ++a) {
          T* yr = y + yo + a * yq;
          const T* xr = x + xo + a;
          for (std::int64_t b = b0; b < b1; ++b) yr[b] = xr[b * xl];
        }
      }
    });
  }

  PermutePlan plan_;
  std::vector<int> order_;  // normalised
};
TBGRAD_REGISTER_OPS(PermuteOp);

// ---------------------------------------------------------------------------------------------
// concat
// ---------------------------------------------------------------------------------------------

// y = the inputs side by side along the axis: viewed as [outer, chunk_i] each, y's row o is the
// inputs' rows o one after another.
class ConcatOp final : public Op {
 public:
  ConcatOp(int axis, std::vector<std::int64_t> chunks, std::vector<std::int64_t> sizes)
      : axis_(axis), chunks_(std::move(chunks)), sizes_(std::move(sizes)) {}
  static constexpr OpTraits kKinds[] = {{.name = "concat"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override { return {0, "copy"}; }

  void forward(const KernelContext& ctx) const override {
    const std::size_t es = dtype_size(ctx.output.dtype());
    const std::int64_t row = std::accumulate(chunks_.begin(), chunks_.end(), std::int64_t{0});
    if (row == 0) return;
    const std::int64_t outer = ctx.output.numel() / row;
    const auto n = static_cast<std::int64_t>(chunks_.size());
    auto* y = static_cast<unsigned char*>(ctx.output.raw());
    parallel_for(outer * n, grain_for(row / n), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t it = lo; it < hi; ++it) {
        const std::int64_t o = it / n;
        const auto i = static_cast<std::size_t>(it % n);
        std::int64_t start = 0;
        for (std::size_t j = 0; j < i; ++j) start += chunks_[j];
        const std::int64_t c = chunks_[i];
        if (c == 0) continue;
        const auto* x = static_cast<const unsigned char*>(ctx.inputs[i].raw());
        std::memcpy(y + static_cast<std::size_t>(o * row + start) * es,
                    x + static_cast<std::size_t>(o * c) * es, static_cast<std::size_t>(c) * es);
      }
    });
  }

  // Each input's gradient is its slice of the output's.
  std::vector<Value> vjp(std::span<const Value>, Value, Value g) const override {
    std::vector<Value> out;
    std::int64_t start = 0;
    for (const std::int64_t s : sizes_) {
      out.push_back(slice(g, axis_, start, start + s));
      start += s;
    }
    return out;
  }

 private:
  int axis_;
  std::vector<std::int64_t> chunks_;  // per input: its size along the axis times the inner size
  std::vector<std::int64_t> sizes_;   // per input: its size along the axis
};
TBGRAD_REGISTER_OPS(ConcatOp);

// ---------------------------------------------------------------------------------------------
// slice and its gradient
// ---------------------------------------------------------------------------------------------

// x viewed as [outer, n_x, inner] and y as [outer, n_y, inner]: y[o, j] = x[o, start + j*step].
struct SliceGeometry {
  int axis = 0;
  std::int64_t outer = 1, inner = 1, n_x = 0, n_y = 0, start = 0, step = 1;

  SliceGeometry(const Shape& x, int a, std::int64_t st, std::int64_t ny, std::int64_t sp)
      : axis(a), n_x(x[a]), n_y(ny), start(st), step(sp) {
    for (int k = 0; k < a; ++k) outer *= x[k];
    for (int k = a + 1; k < x.rank(); ++k) inner *= x[k];
  }
};

class SliceOp final : public Op {
 public:
  explicit SliceOp(SliceGeometry geo, Shape x) : geo_(geo), x_(x) {}
  static constexpr OpTraits kKinds[] = {{.name = "slice"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override { return {0, "copy"}; }
  void forward(const KernelContext& ctx) const override {
    const SliceGeometry& s = geo_;
    const std::size_t es = dtype_size(ctx.output.dtype());
    const auto* x = static_cast<const unsigned char*>(ctx.inputs[0].raw());
    auto* y = static_cast<unsigned char*>(ctx.output.raw());
    const std::size_t run = static_cast<std::size_t>(s.inner) * es;
    parallel_for(s.outer * s.n_y, grain_for(s.inner), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t it = lo; it < hi; ++it) {
        const std::int64_t o = it / s.n_y, j = it % s.n_y;
        const std::int64_t src = (o * s.n_x + s.start + j * s.step) * s.inner;
        if (run) std::memcpy(y + static_cast<std::size_t>(it * s.inner) * es,
                             x + static_cast<std::size_t>(src) * es, run);
      }
    });
  }
  std::vector<Value> vjp(std::span<const Value>, Value, Value g) const override {
    return {slice_backward(g, x_, geo_.axis, geo_.start, geo_.start + geo_.n_y * geo_.step,
                           geo_.step)};
  }

 private:
  SliceGeometry geo_;
  Shape x_;
};
TBGRAD_REGISTER_OPS(SliceOp);

// The adjoint of slice: x's shape, zeros except the sliced positions, which hold the gradient.
class SliceBackwardOp final : public Op {
 public:
  explicit SliceBackwardOp(SliceGeometry geo) : geo_(geo) {}
  static constexpr OpTraits kKinds[] = {{.name = "slice_backward"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override { return {0, "copy"}; }
  void forward(const KernelContext& ctx) const override {
    const SliceGeometry& s = geo_;
    const std::size_t es = dtype_size(ctx.output.dtype());
    const auto* g = static_cast<const unsigned char*>(ctx.inputs[0].raw());
    auto* gx = static_cast<unsigned char*>(ctx.output.raw());
    const std::size_t run = static_cast<std::size_t>(s.inner) * es;
    parallel_for(s.outer * s.n_x, grain_for(s.inner), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t it = lo; it < hi; ++it) {
        const std::int64_t o = it / s.n_x, i = it % s.n_x;
        unsigned char* dst = gx + static_cast<std::size_t>(it * s.inner) * es;
        const std::int64_t d = i - s.start;
        if (run == 0) continue;
        if (d >= 0 && d % s.step == 0 && d / s.step < s.n_y) {
          const std::int64_t src = (o * s.n_y + d / s.step) * s.inner;
          std::memcpy(dst, g + static_cast<std::size_t>(src) * es, run);
        } else {
          std::memset(dst, 0, run);  // all-zero bytes are +0.0 in IEEE float and double
        }
      }
    });
  }
  std::vector<Value> vjp(std::span<const Value>, Value, Value g) const override {
    return {slice(g, geo_.axis, geo_.start, geo_.start + geo_.n_y * geo_.step, geo_.step)};
  }

 private:
  SliceGeometry geo_;
};
TBGRAD_REGISTER_OPS(SliceBackwardOp);

// Python's slice(start, end) on an axis of size n with a positive step: negative indices count
// from the end, then both are clamped to [0, n]; the number of elements taken.
struct Range {
  std::int64_t start, count;
};
Range python_range(std::int64_t n, std::int64_t start, std::int64_t end, std::int64_t step) {
  auto clamp = [n](std::int64_t i) {
    if (i < 0) i += n;
    return std::clamp<std::int64_t>(i, 0, n);
  };
  const std::int64_t s = clamp(start), e = clamp(end);
  return {s, e > s ? (e - s + step - 1) / step : 0};
}

SliceGeometry slice_geometry(const char* op, const Value& x, int axis, std::int64_t start,
                             std::int64_t end, std::int64_t step) {
  const int a = detail::normalize_axis(op, x, axis);
  if (step <= 0) {
    shape_error(op, "step " + std::to_string(step) + " must be positive (slicing " +
                        x.describe() + " along axis " + std::to_string(axis) + ")");
  }
  const Range r = python_range(x.shape()[a], start, end, step);
  return SliceGeometry(x.shape(), a, r.start, r.count, step);
}

// ---------------------------------------------------------------------------------------------
// pad
// ---------------------------------------------------------------------------------------------

// y[i] = x[i - before] where that is inside x, else the value; per axis, `before` and `after`
// may be negative (cropping), as F.pad's constant mode allows.
class PadOp final : public Op {
 public:
  PadOp(const Shape& x, const Shape& y, Dims before, std::vector<std::int64_t> pads, double value)
      : x_(x), y_(y), before_(before), pads_(std::move(pads)), value_(value) {}
  static constexpr OpTraits kKinds[] = {{.name = "pad"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override { return {0, "copy"}; }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      const T v = static_cast<T>(value_);
      const int r = y_.rank();
      if (r == 0) {
        y[0] = x[0];
        return;
      }
      const std::int64_t wy = y_[r - 1], wx = x_[r - 1];
      if (wy == 0) return;
      const std::int64_t rows = ctx.output.numel() / wy;
      const std::int64_t left = before_[static_cast<std::size_t>(r - 1)];
      // The columns of y that read x: [j0, j1).
      const std::int64_t j0 = std::clamp<std::int64_t>(left, 0, wy);
      const std::int64_t j1 = std::clamp<std::int64_t>(wx + left, j0, wy);
      const Dims xst = detail::strides_of(x_);
      parallel_for(rows, grain_for(wy), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t row = lo; row < hi; ++row) {
          T* yr = y + row * wy;
          std::int64_t rem = row, xo = 0;
          bool inside = true;
          for (int k = r - 2; k >= 0; --k) {
            const std::int64_t i = rem % y_[k] - before_[static_cast<std::size_t>(k)];
            rem /= y_[k];
            if (i < 0 || i >= x_[k]) inside = false;
            xo += i * xst[static_cast<std::size_t>(k)];
          }
          if (!inside || j1 <= j0) {
            std::fill(yr, yr + wy, v);
            continue;
          }
          std::fill(yr, yr + j0, v);
          std::copy(x + xo + (j0 - left), x + xo + (j1 - left), yr + j0);
          std::fill(yr + j1, yr + wy, v);
        }
      });
    });
  }

  // The gradient is the output's gradient with the padding cut off (and cropped parts
  // restored as zeros): pad with the opposite amounts.
  std::vector<Value> vjp(std::span<const Value>, Value, Value g) const override {
    std::vector<std::int64_t> neg(pads_.size());
    for (std::size_t i = 0; i < pads_.size(); ++i) neg[i] = -pads_[i];
    return {pad(g, neg, 0.0)};
  }

 private:
  Shape x_, y_;
  Dims before_;
  std::vector<std::int64_t> pads_;
  double value_;
};
TBGRAD_REGISTER_OPS(PadOp);

std::string list_str(const std::vector<std::int64_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

void require_valid_float(const char* op, const Value& x) {
  if (!x.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, x);
}

}  // namespace

Value permute(Value x, const std::vector<int>& order) {
  require_valid_float("permute", x);
  const int rank = x.shape().rank();
  if (static_cast<int>(order.size()) != rank) {
    shape_error("permute", "the order " + order_str(order) + " must name each of the " +
                               std::to_string(rank) + " axes of " + x.describe() + " once");
  }
  std::vector<int> norm;
  std::array<bool, kMaxRank> seen{};
  for (const int a : order) {
    const int k = detail::normalize_axis("permute", x, a);
    if (seen[static_cast<std::size_t>(k)]) {
      shape_error("permute", "axis " + std::to_string(a) + " appears twice in the order " +
                                 order_str(order) + " of " + x.describe());
    }
    seen[static_cast<std::size_t>(k)] = true;
    norm.push_back(k);
  }
  bool identity = true;
  Dims d{};
  for (int k = 0; k < rank; ++k) {
    identity = identity && norm[static_cast<std::size_t>(k)] == k;
    d[static_cast<std::size_t>(k)] = x.shape()[norm[static_cast<std::size_t>(k)]];
  }
  if (identity) return x;
  const Shape out(std::span<const std::int64_t>(d.data(), static_cast<std::size_t>(rank)));
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<PermuteOp>(x.shape(), norm), ins, out, x.dtype());
}

Value transpose(Value x, int a, int b) {
  require_valid_float("transpose", x);
  const int ia = detail::normalize_axis("transpose", x, a);
  const int ib = detail::normalize_axis("transpose", x, b);
  std::vector<int> order(static_cast<std::size_t>(x.shape().rank()));
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[static_cast<std::size_t>(ia)], order[static_cast<std::size_t>(ib)]);
  return permute(x, order);
}

Value concat(std::span<const Value> xs, int axis) {
  if (xs.empty()) shape_error("concat", "needs at least one input");
  const Value& first = xs[0];
  require_valid_float("concat", first);
  const int a = detail::normalize_axis("concat", first, axis);
  const Shape s0 = first.shape();
  std::vector<std::int64_t> chunks, sizes;
  std::int64_t total = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Value& x = xs[i];
    detail::require_same_graph("concat", first, x);
    detail::require_same_dtype("concat", first, x);
    const Shape s = x.shape();
    bool ok = s.rank() == s0.rank();
    for (int k = 0; ok && k < s.rank(); ++k) ok = k == a || s[k] == s0[k];
    if (!ok) {
      shape_error("concat", "input " + std::to_string(i) + " " + x.describe() +
                                " does not match input 0 " + first.describe() +
                                " on every axis but the concatenation axis " +
                                std::to_string(axis));
    }
    std::int64_t inner = 1;
    for (int k = a + 1; k < s.rank(); ++k) inner *= s[k];
    chunks.push_back(checked::mul(s[a], inner, "concat"));
    sizes.push_back(s[a]);
    total = checked::add(total, s[a], "concat");
  }
  if (xs.size() == 1) return first;
  std::vector<std::int64_t> d;
  for (int k = 0; k < s0.rank(); ++k) d.push_back(k == a ? total : s0[k]);
  const Shape out{std::span<const std::int64_t>(d)};  // checks the element count
  return first.graph().add_op(std::make_shared<ConcatOp>(a, std::move(chunks), std::move(sizes)),
                              xs, out, first.dtype());
}

Value concat(const std::vector<Value>& xs, int axis) {
  return concat(std::span<const Value>(xs), axis);
}

Value slice(Value x, int axis, std::int64_t start, std::int64_t end, std::int64_t step) {
  require_valid_float("slice", x);
  const SliceGeometry geo = slice_geometry("slice", x, axis, start, end, step);
  if (geo.start == 0 && geo.n_y == geo.n_x && geo.step == 1) return x;
  Shape out = x.shape();
  out[geo.axis] = geo.n_y;
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<SliceOp>(geo, x.shape()), ins, out, x.dtype());
}

Value slice_backward(Value grad, const Shape& shape, int axis, std::int64_t start,
                     std::int64_t end, std::int64_t step) {
  require_valid_float("slice_backward", grad);
  if (shape.rank() != grad.shape().rank()) {
    shape_error("slice_backward", "gradient " + grad.describe() + " and the sliced shape " +
                                      shape.str() + " must have the same rank");
  }
  const int a = axis < 0 ? axis + shape.rank() : axis;
  if (a < 0 || a >= shape.rank()) {
    shape_error("slice_backward", "axis " + std::to_string(axis) + " is out of range for " +
                                      shape.str());
  }
  if (step <= 0) shape_error("slice_backward", "step " + std::to_string(step) + " must be positive");
  const Range r = python_range(shape[a], start, end, step);
  Shape expected = shape;
  expected[a] = r.count;
  if (!(expected == grad.shape())) {
    shape_error("slice_backward", "gradient " + grad.describe() + " must have the sliced shape " +
                                      expected.str() + " of " + shape.str());
  }
  Value ins[] = {grad};
  return grad.graph().add_op(
      std::make_shared<SliceBackwardOp>(SliceGeometry(shape, a, r.start, r.count, step)), ins,
      shape, grad.dtype());
}

std::vector<Value> split(Value x, const std::vector<std::int64_t>& sizes, int axis) {
  require_valid_float("split", x);
  const int a = detail::normalize_axis("split", x, axis);
  std::int64_t total = 0;
  for (const std::int64_t s : sizes) {
    if (s < 0) {
      shape_error("split", "size " + std::to_string(s) + " in " + list_str(sizes) +
                               " is negative (splitting " + x.describe() + ")");
    }
    total = checked::add(total, s, "split");
  }
  if (total != x.shape()[a]) {
    shape_error("split", "the sizes " + list_str(sizes) + " add up to " + std::to_string(total) +
                             ", not to the size " + std::to_string(x.shape()[a]) + " of axis " +
                             std::to_string(axis) + " of " + x.describe());
  }
  std::vector<Value> parts;
  std::int64_t start = 0;
  for (const std::int64_t s : sizes) {
    parts.push_back(slice(x, a, start, start + s));
    start += s;
  }
  return parts;
}

Value pad(Value x, const std::vector<std::int64_t>& pads, double value) {
  require_valid_float("pad", x);
  const Shape s = x.shape();
  const int r = s.rank();
  if (pads.size() % 2 != 0 || static_cast<int>(pads.size()) > 2 * r) {
    shape_error("pad", "pads " + list_str(pads) + " must be (left, right) pairs for at most the " +
                           std::to_string(r) + " axes of " + x.describe() + ", last axis first");
  }
  Dims before{};
  std::vector<std::int64_t> d(static_cast<std::size_t>(r));
  bool identity = true;
  for (int k = 0; k < r; ++k) d[static_cast<std::size_t>(k)] = s[k];
  for (std::size_t p = 0; p < pads.size() / 2; ++p) {
    const int k = r - 1 - static_cast<int>(p);
    const std::int64_t lo = pads[2 * p], hi = pads[2 * p + 1];
    std::int64_t n = 0;
    if (__builtin_add_overflow(s[k], lo, &n) || __builtin_add_overflow(n, hi, &n) || n < 0) {
      shape_error("pad", "pads " + list_str(pads) + " leave axis " + std::to_string(k) + " of " +
                             x.describe() + " with a negative size " + std::to_string(n));
    }
    before[static_cast<std::size_t>(k)] = lo;
    d[static_cast<std::size_t>(k)] = n;
    identity = identity && lo == 0 && hi == 0;
  }
  if (identity) return x;
  const Shape out{std::span<const std::int64_t>(d)};
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<PadOp>(s, out, before, pads, value), ins, out,
                          x.dtype());
}

Value per_channel(Value v, const Value& x) {
  require_valid_float("per_channel", v);
  if (!x.valid()) shape_error("per_channel", "x is an invalid (empty) Value");
  if (v.shape().rank() != 1 || x.shape().rank() < 2 || x.shape()[1] != v.shape()[0]) {
    shape_error("per_channel", "a per-channel vector " + v.describe() +
                                   " must be [C] for the channel axis 1 of " + x.describe());
  }
  std::vector<std::int64_t> d(static_cast<std::size_t>(x.shape().rank() - 1), 1);
  d[0] = v.shape()[0];
  return reshape(v, Shape(std::span<const std::int64_t>(d)));
}

}  // namespace tbgrad
