#include "ops/softmax.hpp"

#include <algorithm>
#include <cmath>
#include <memory>

#include "graph/parallel.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

struct Rows {
  std::int64_t rows, cols;
  explicit Rows(const Shape& s)
      : rows(s.rank() ? s.numel() / std::max<std::int64_t>(1, s[s.rank() - 1]) : 1),
        cols(s.rank() ? s[s.rank() - 1] : 1) {}
};

std::int64_t row_grain(std::int64_t cols) {
  return std::max<std::int64_t>(1, 8192 / std::max<std::int64_t>(1, cols));
}

// Stable log(sum(exp(x))) of one row.
template <typename T>
T log_sum_exp(const T* x, std::int64_t n) {
  T m = x[0];
  for (std::int64_t j = 1; j < n; ++j) m = std::max(m, x[j]);
  T s = 0;
  for (std::int64_t j = 0; j < n; ++j) s += std::exp(x[j] - m);
  return m + std::log(s);
}

enum class Kind { kSoftmax, kLogSoftmax };

class SoftmaxOp final : public Op {
 public:
  explicit SoftmaxOp(Kind kind) : kind_(kind) {}
  // By Kind.
  static constexpr OpTraits kKinds[] = {{.name = "softmax"}, {.name = "log_softmax"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const Rows r(ctx.output.shape());
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      parallel_for(r.rows, row_grain(r.cols), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const T* xr = x + i * r.cols;
          T* yr = y + i * r.cols;
          if (kind_ == Kind::kSoftmax) {
            // exp(x - max) / sum rather than exp(x - lse): no precision lost to a large lse.
            T m = xr[0];
            for (std::int64_t j = 1; j < r.cols; ++j) m = std::max(m, xr[j]);
            T sum = 0;
            for (std::int64_t j = 0; j < r.cols; ++j) sum += (yr[j] = std::exp(xr[j] - m));
            const T inv = T(1) / sum;
            for (std::int64_t j = 0; j < r.cols; ++j) yr[j] *= inv;
          } else {
            const T lse = log_sum_exp(xr, r.cols);
            for (std::int64_t j = 0; j < r.cols; ++j) yr[j] = xr[j] - lse;
          }
        }
      });
    });
  }
  std::vector<Value> vjp(std::span<const Value>, Value y, Value g) const override {
    return {kind_ == Kind::kSoftmax ? softmax_backward(y, g) : log_softmax_backward(y, g)};
  }

 private:
  Kind kind_;
};
TBGRAD_REGISTER_OPS(SoftmaxOp);

class SoftmaxBackwardOp final : public Op {
 public:
  explicit SoftmaxBackwardOp(Kind kind) : kind_(kind) {}
  // By Kind.
  static constexpr OpTraits kKinds[] = {{.name = "softmax_backward", .has_vjp = false},
                                        {.name = "log_softmax_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const Rows r(ctx.output.shape());
      const T* y = ctx.inputs[0].data<T>();
      const T* g = ctx.inputs[1].data<T>();
      T* gx = ctx.output.data<T>();
      parallel_for(r.rows, row_grain(r.cols), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const T* yr = y + i * r.cols;
          const T* gr = g + i * r.cols;
          T* out = gx + i * r.cols;
          T s = 0;
          if (kind_ == Kind::kSoftmax) {
            for (std::int64_t j = 0; j < r.cols; ++j) s += gr[j] * yr[j];
            for (std::int64_t j = 0; j < r.cols; ++j) out[j] = yr[j] * (gr[j] - s);
          } else {
            for (std::int64_t j = 0; j < r.cols; ++j) s += gr[j];
            for (std::int64_t j = 0; j < r.cols; ++j) out[j] = gr[j] - std::exp(yr[j]) * s;
          }
        }
      });
    });
  }

 private:
  Kind kind_;
};
TBGRAD_REGISTER_OPS(SoftmaxBackwardOp);

void check_label(std::int32_t label, std::int64_t row, std::int64_t classes) {
  if (label < 0 || label >= classes) {
    throw Error("softmax_cross_entropy: label " + std::to_string(label) + " of row " +
                std::to_string(row) + " is outside [0, " + std::to_string(classes) + ")");
  }
}

class SoftmaxCrossEntropyOp final : public Op {
 public:
  // Note [Batch means]: the mean over the rows.
  static constexpr OpTraits kKinds[] = {
      {.name = "softmax_cross_entropy", .batch_reduce = BatchReduce::kMean}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {4 * static_cast<double>(in[0].numel()), "4*B*C (max, sub, exp, add)"};
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return static_cast<std::size_t>(in[0].shape()[0]) * sizeof(double);
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const Rows r(ctx.inputs[0].shape());
      const T* x = ctx.inputs[0].data<T>();
      const std::int32_t* labels = ctx.inputs[1].data<std::int32_t>();
      auto* loss = static_cast<double*>(ctx.workspace);  // [B]
      for (std::int64_t i = 0; i < r.rows; ++i) check_label(labels[i], i, r.cols);
      parallel_for(r.rows, row_grain(r.cols), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const T* xr = x + i * r.cols;
          loss[i] = static_cast<double>(log_sum_exp(xr, r.cols) - xr[labels[i]]);
        }
      });
      // Batch mean summed in row order: independent of the thread count.
      double total = 0;
      for (std::int64_t i = 0; i < r.rows; ++i) total += loss[i];
      ctx.output.data<T>()[0] = static_cast<T>(total / static_cast<double>(r.rows));
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    return {softmax_cross_entropy_backward(in[0], in[1], g), Value()};
  }
};
TBGRAD_REGISTER_OPS(SoftmaxCrossEntropyOp);

class SoftmaxCrossEntropyBackwardOp final : public Op {
 public:
  static constexpr OpTraits kKinds[] = {{.name = "softmax_cross_entropy_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {3 * static_cast<double>(in[0].numel()), "3*B*C"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const Rows r(ctx.inputs[0].shape());
      const T* x = ctx.inputs[0].data<T>();
      const std::int32_t* labels = ctx.inputs[1].data<std::int32_t>();
      const T scale = ctx.inputs[2].data<T>()[0] / static_cast<T>(r.rows);
      T* gx = ctx.output.data<T>();
      for (std::int64_t i = 0; i < r.rows; ++i) check_label(labels[i], i, r.cols);
      parallel_for(r.rows, row_grain(r.cols), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const T* xr = x + i * r.cols;
          T* out = gx + i * r.cols;
          T m = xr[0];
          for (std::int64_t j = 1; j < r.cols; ++j) m = std::max(m, xr[j]);
          T sum = 0;
          for (std::int64_t j = 0; j < r.cols; ++j) sum += (out[j] = std::exp(xr[j] - m));
          const T f = scale / sum;  // softmax * scale
          for (std::int64_t j = 0; j < r.cols; ++j) out[j] *= f;
          out[labels[i]] -= scale;
        }
      });
    });
  }
};
TBGRAD_REGISTER_OPS(SoftmaxCrossEntropyBackwardOp);

Value softmax_like(Kind kind, const char* op, Value x) {
  if (!x.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, x);
  if (x.shape().rank() < 1 || x.shape()[x.shape().rank() - 1] < 1) {
    shape_error(op, "input " + x.describe() + " needs a non-empty last dimension");
  }
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<SoftmaxOp>(kind), ins, x.shape(), x.dtype());
}

Value softmax_backward_like(Kind kind, const char* op, Value y, Value g) {
  detail::require_same_graph(op, y, g);
  detail::require_same_dtype(op, y, g);
  if (!(y.shape() == g.shape())) shape_error(op, "gradient " + g.describe() + " must match " + y.describe());
  Value ins[] = {y, g};
  return y.graph().add_op(std::make_shared<SoftmaxBackwardOp>(kind), ins, y.shape(), y.dtype());
}

void check_cross_entropy(const char* op, const Value& logits, const Value& labels) {
  detail::require_same_graph(op, logits, labels);
  detail::require_float(op, logits);
  detail::require_rank(op, logits, 2, "logits");
  if (labels.dtype() != DType::kI32) {
    shape_error(op, "labels " + labels.describe() + " must be i32 class indices (use "
                    "Graph::input_labels)");
  }
  if (labels.shape().rank() != 1 || labels.shape()[0] != logits.shape()[0]) {
    shape_error(op, "labels " + labels.describe() + " must be [" +
                        std::to_string(logits.shape()[0]) + "], one per row of logits " +
                        logits.describe());
  }
  if (logits.shape()[0] < 1 || logits.shape()[1] < 1) {
    shape_error(op, "logits " + logits.describe() + " must have at least one row and one class");
  }
}

}  // namespace

Value softmax(Value x) { return softmax_like(Kind::kSoftmax, "softmax", x); }
Value log_softmax(Value x) { return softmax_like(Kind::kLogSoftmax, "log_softmax", x); }
Value softmax_backward(Value y, Value g) {
  return softmax_backward_like(Kind::kSoftmax, "softmax_backward", y, g);
}
Value log_softmax_backward(Value y, Value g) {
  return softmax_backward_like(Kind::kLogSoftmax, "log_softmax_backward", y, g);
}

Value softmax_cross_entropy(Value logits, Value labels) {
  check_cross_entropy("softmax_cross_entropy", logits, labels);
  Value ins[] = {logits, labels};
  return logits.graph().add_op(std::make_shared<SoftmaxCrossEntropyOp>(), ins, Shape{},
                               logits.dtype());
}

Value softmax_cross_entropy_backward(Value logits, Value labels, Value grad) {
  const char* op = "softmax_cross_entropy_backward";
  check_cross_entropy(op, logits, labels);
  detail::require_same_dtype(op, logits, grad);
  if (grad.shape().numel() != 1) shape_error(op, "gradient " + grad.describe() + " must be a scalar");
  Value ins[] = {logits, labels, grad};
  return logits.graph().add_op(std::make_shared<SoftmaxCrossEntropyBackwardOp>(), ins,
                               logits.shape(), logits.dtype());
}

}  // namespace tbgrad
