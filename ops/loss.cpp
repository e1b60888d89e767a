#include "ops/loss.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "graph/parallel.hpp"
#include "ops/kernel_util.hpp"
#include "ops/softmax.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

// Elements per chunk of a loss's sum: fixed, so that the sum does not depend on the thread
// count (Note [Determinism]). Each chunk is summed in double, the chunks in order.
constexpr std::int64_t kLossChunk = 4096;
constexpr std::int64_t kElementwiseGrain = 16384;

std::int64_t row_grain(std::int64_t cols) {
  return std::max<std::int64_t>(1, 8192 / std::max<std::int64_t>(1, cols));
}

// ---------------------------------------------------------------------------------------------
// Elementwise losses: mse, l1, huber, binary cross-entropy with logits
// ---------------------------------------------------------------------------------------------

enum class PointKind { kMse, kL1, kHuber, kBce };

// log(1 + exp(-x)) without overflow: softplus(-x).
template <typename T>
T softplus_neg(T x) {
  return std::log1p(std::exp(-std::abs(x))) + std::max(-x, T(0));
}

template <typename T>
T stable_sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

// sign(d), 0 at 0, NaN for NaN (never swallowed).
template <typename T>
T sign_of(T d) {
  return d > T(0) ? T(1) : (d < T(0) ? T(-1) : d * T(0));
}

struct PointParams {
  PointKind kind;
  double delta;  // huber
};

// The loss of one element: prediction x, target t, positive weight w (bce; 1 without).
template <typename T>
T point_term(const PointParams& p, T x, T t, T w) {
  switch (p.kind) {
    case PointKind::kMse: {
      const T d = x - t;
      return d * d;
    }
    case PointKind::kL1:
      return std::abs(x - t);
    case PointKind::kHuber: {
      const T d = x - t, ad = std::abs(d), delta = static_cast<T>(p.delta);
      // As PyTorch: the quadratic branch where |d| < delta. A NaN d takes the other: NaN.
      return ad < delta ? T(0.5) * d * d : delta * (ad - T(0.5) * delta);
    }
    case PointKind::kBce:
      return (T(1) - t) * x + (T(1) + (w - T(1)) * t) * softplus_neg(x);
  }
  return T(0);
}

// d term / d x (wrt prediction) or d term / d t (wrt target).
template <typename T>
T point_grad(const PointParams& p, LossWrt wrt, T x, T t, T w) {
  const T sign = wrt == LossWrt::kPrediction ? T(1) : T(-1);
  switch (p.kind) {
    case PointKind::kMse:
      return sign * T(2) * (x - t);
    case PointKind::kL1:
      return sign * sign_of(x - t);
    case PointKind::kHuber: {
      const T d = x - t, delta = static_cast<T>(p.delta);
      return sign * (d < -delta ? -delta : (d > delta ? delta : d));
    }
    case PointKind::kBce:
      if (wrt == LossWrt::kPrediction) {
        return (T(1) - t) + (T(1) + (w - T(1)) * t) * (stable_sigmoid(x) - T(1));
      }
      return -x + (w - T(1)) * softplus_neg(x);
  }
  return T(0);
}

struct PointInfo {
  const char* name;
  const char* backward;
};
constexpr PointInfo kPointInfo[] = {
    {"mse_loss", "mse_loss_backward"},
    {"l1_loss", "l1_loss_backward"},
    {"huber_loss", "huber_loss_backward"},
    {"binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward"},
};

const char* point_name(PointKind k) { return kPointInfo[static_cast<int>(k)].name; }

BatchReduce reduce_kind(Reduction r) {
  switch (r) {
    case Reduction::kMean:
      return BatchReduce::kMean;
    case Reduction::kSum:
      return BatchReduce::kSum;
    case Reduction::kNone:
      break;
  }
  return BatchReduce::kNone;
}

// The positive weight of element i: pos_weight[i % C], or 1.
template <typename T>
T pos_weight_at(const T* pw, std::int64_t classes, std::int64_t i) {
  return pw ? pw[i % classes] : T(1);
}

Value point_loss(PointKind kind, Value pred, Value target, Value pos_weight, double delta,
                 Reduction reduction);
Value point_backward(PointKind kind, Value pred, Value target, Value pos_weight, Value grad,
                     double delta, Reduction reduction, LossWrt wrt);

class PointLossOp final : public Op {
 public:
  PointLossOp(PointParams p, Reduction r, bool has_pw) : p_(p), r_(r), has_pw_(has_pw) {}
  // By PointKind.
  static constexpr OpTraits kKinds[] = {{.name = "mse_loss"},
                                        {.name = "l1_loss"},
                                        {.name = "huber_loss"},
                                        {.name = "binary_cross_entropy_with_logits"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(p_.kind)]; }
  BatchReduce batch_reduce() const override { return reduce_kind(r_); }  // Note [Batch means]
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    const double n = static_cast<double>(in[0].numel());
    return p_.kind == PointKind::kBce ? OpCost{8 * n, "8*numel (exp, log1p, mul-adds)"}
                                      : OpCost{3 * n, "3*numel (sub, mul or abs, add)"};
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    if (r_ == Reduction::kNone) return 0;
    return static_cast<std::size_t>(fixed_chunks(in[0].shape().numel(), kLossChunk)) *
           sizeof(double);
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      const T* t = ctx.inputs[1].data<T>();
      const T* pw = has_pw_ ? ctx.inputs[2].data<T>() : nullptr;
      const std::int64_t classes = has_pw_ ? ctx.inputs[2].numel() : 1;
      const std::int64_t n = ctx.inputs[0].numel();
      T* y = ctx.output.data<T>();
      if (r_ == Reduction::kNone) {
        parallel_for(n, kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
          for (std::int64_t i = lo; i < hi; ++i) {
            y[i] = point_term(p_, x[i], t[i], pos_weight_at(pw, classes, i));
          }
        });
        return;
      }
      const std::int64_t chunks = fixed_chunks(n, kLossChunk);
      auto* partial = static_cast<double*>(ctx.workspace);
      parallel_for(chunks, 4, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t c = lo; c < hi; ++c) {
          double s = 0;
          const std::int64_t end = std::min(n, (c + 1) * kLossChunk);
          for (std::int64_t i = c * kLossChunk; i < end; ++i) {
            s += static_cast<double>(point_term(p_, x[i], t[i], pos_weight_at(pw, classes, i)));
          }
          partial[c] = s;
        }
      });
      double total = 0;
      for (std::int64_t c = 0; c < chunks; ++c) total += partial[c];
      if (r_ == Reduction::kMean) total /= static_cast<double>(n);
      y[0] = static_cast<T>(total);
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Value pw = has_pw_ ? in[2] : Value();
    std::vector<Value> grads = {
        point_backward(p_.kind, in[0], in[1], pw, g, p_.delta, r_, LossWrt::kPrediction),
        point_backward(p_.kind, in[0], in[1], pw, g, p_.delta, r_, LossWrt::kTarget)};
    if (has_pw_) grads.emplace_back();  // pos_weight: not differentiated (as PyTorch)
    return grads;
  }

 private:
  PointParams p_;
  Reduction r_;
  bool has_pw_;
};
TBGRAD_REGISTER_OPS(PointLossOp);

// Inputs: pred, target, [pos_weight], grad.
class PointLossBackwardOp final : public Op {
 public:
  PointLossBackwardOp(PointParams p, Reduction r, bool has_pw, LossWrt wrt)
      : p_(p), r_(r), has_pw_(has_pw), wrt_(wrt) {}
  // By PointKind.
  static constexpr OpTraits kKinds[] = {
      {.name = "mse_loss_backward", .has_vjp = false},
      {.name = "l1_loss_backward", .has_vjp = false},
      {.name = "huber_loss_backward", .has_vjp = false},
      {.name = "binary_cross_entropy_with_logits_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(p_.kind)]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    const double n = static_cast<double>(in[0].numel());
    return p_.kind == PointKind::kBce ? OpCost{8 * n, "8*numel (exp, mul-adds)"}
                                      : OpCost{3 * n, "3*numel"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      const T* t = ctx.inputs[1].data<T>();
      const T* pw = has_pw_ ? ctx.inputs[2].data<T>() : nullptr;
      const std::int64_t classes = has_pw_ ? ctx.inputs[2].numel() : 1;
      const T* g = ctx.inputs[has_pw_ ? 3 : 2].data<T>();
      const std::int64_t n = ctx.inputs[0].numel();
      T* out = ctx.output.data<T>();
      const bool each = r_ == Reduction::kNone;
      const T scale = each ? T(1)
                           : (r_ == Reduction::kMean ? g[0] / static_cast<T>(n) : g[0]);
      parallel_for(n, kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const T d = point_grad(p_, wrt_, x[i], t[i], pos_weight_at(pw, classes, i));
          out[i] = d * (each ? g[i] : scale);
        }
      });
    });
  }

 private:
  PointParams p_;
  Reduction r_;
  bool has_pw_;
  LossWrt wrt_;
};
TBGRAD_REGISTER_OPS(PointLossBackwardOp);

void check_point_inputs(const char* op, const Value& pred, const Value& target,
                        const Value& pos_weight) {
  detail::require_same_graph(op, pred, target);
  detail::require_float(op, pred);
  detail::require_float(op, target);
  detail::require_same_dtype(op, pred, target);
  if (!(pred.shape() == target.shape())) {
    shape_error(op, "target " + target.describe() + " must have the shape of the input " +
                        pred.describe() + " (tbgrad does not broadcast them)");
  }
  if (pos_weight.valid()) {
    detail::require_same_graph(op, pred, pos_weight);
    detail::require_float(op, pos_weight);
    detail::require_same_dtype(op, pred, pos_weight);
    const Shape& s = pred.shape();
    const std::int64_t classes = s.rank() ? s[s.rank() - 1] : 1;
    if (!(pos_weight.shape() == Shape{classes})) {
      shape_error(op, "pos_weight " + pos_weight.describe() + " must be [" +
                          std::to_string(classes) + "], one weight per class (the last "
                          "dimension) of the logits " + pred.describe());
    }
  }
}

Shape loss_shape(Reduction r, const Value& x) {
  return r == Reduction::kNone ? x.shape() : Shape{};
}

Value point_loss(PointKind kind, Value pred, Value target, Value pos_weight, double delta,
                 Reduction reduction) {
  const char* op = point_name(kind);
  check_point_inputs(op, pred, target, pos_weight);
  if (kind == PointKind::kHuber && !(delta > 0 && std::isfinite(delta))) {
    shape_error(op, "delta must be positive and finite, got " + std::to_string(delta) +
                        " for the input " + pred.describe());
  }
  std::vector<Value> ins = {pred, target};
  if (pos_weight.valid()) ins.push_back(pos_weight);
  return pred.graph().add_op(
      std::make_shared<PointLossOp>(PointParams{kind, delta}, reduction, pos_weight.valid()), ins,
      loss_shape(reduction, pred), pred.dtype());
}

void check_loss_grad(const char* op, Reduction reduction, const Value& x, const Value& grad) {
  detail::require_same_graph(op, x, grad);
  detail::require_same_dtype(op, x, grad);
  const Shape want = loss_shape(reduction, x);
  if (!(grad.shape() == want)) {
    shape_error(op, "gradient " + grad.describe() + " must have the loss's shape " + want.str() +
                        " (reduction " + reduction_name(reduction) + ") for the input " +
                        x.describe());
  }
}

Value point_backward(PointKind kind, Value pred, Value target, Value pos_weight, Value grad,
                     double delta, Reduction reduction, LossWrt wrt) {
  const char* op = kPointInfo[static_cast<int>(kind)].backward;
  check_point_inputs(op, pred, target, pos_weight);
  check_loss_grad(op, reduction, pred, grad);
  std::vector<Value> ins = {pred, target};
  if (pos_weight.valid()) ins.push_back(pos_weight);
  ins.push_back(grad);
  return pred.graph().add_op(std::make_shared<PointLossBackwardOp>(PointParams{kind, delta},
                                                                   reduction, pos_weight.valid(),
                                                                   wrt),
                             ins, pred.shape(), pred.dtype());
}

// ---------------------------------------------------------------------------------------------
// Class-index losses: nll_loss and the cross-entropy with label smoothing and class weights
// ---------------------------------------------------------------------------------------------

void check_label(const char* op, std::int32_t label, std::int64_t row, std::int64_t classes) {
  if (label < 0 || label >= classes) {
    throw Error(std::string(op) + ": label " + std::to_string(label) + " of row " +
                std::to_string(row) + " is outside [0, " + std::to_string(classes) + ")");
  }
}

void check_labels(const char* op, const std::int32_t* labels, std::int64_t rows,
                  std::int64_t classes) {
  for (std::int64_t i = 0; i < rows; ++i) check_label(op, labels[i], i, classes);
}

// What a class-index loss's kernels share: the shape, the options, where the weights are.
struct ClassLoss {
  double smoothing = 0;  // 0 for nll_loss
  Reduction reduction = Reduction::kMean;
  bool has_weights = false;
};

// The divisor of the rows' summed loss: the sum of the rows' label weights for kMean (B without
// weights), 1 otherwise; summed in row order, in double.
template <typename T>
double divisor(const ClassLoss& c, const T* w, const std::int32_t* labels, std::int64_t rows) {
  if (c.reduction != Reduction::kMean) return 1.0;
  if (!w) return static_cast<double>(rows);
  double s = 0;
  for (std::int64_t i = 0; i < rows; ++i) s += static_cast<double>(w[labels[i]]);
  return s;
}

// Row losses [B] (kNone) or their reduction (one number) from the rows' losses in `terms`
// (double, the workspace), summed in row order.
template <typename T>
void reduce_rows(const ClassLoss& c, const double* terms, std::int64_t rows, double div, T* y) {
  if (c.reduction == Reduction::kNone) {
    for (std::int64_t i = 0; i < rows; ++i) y[i] = static_cast<T>(terms[i]);
    return;
  }
  double total = 0;
  for (std::int64_t i = 0; i < rows; ++i) total += terms[i];
  y[0] = static_cast<T>(total / div);
}

// Inputs: log_probs [B, C], labels [B], [weights [C]].
class NllLossOp final : public Op {
 public:
  explicit NllLossOp(ClassLoss c) : c_(c) {}
  static constexpr OpTraits kKinds[] = {{.name = "nll_loss"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  // Note [Batch means]: a class-weighted mean is not a mean over the rows.
  BatchReduce batch_reduce() const override {
    return c_.has_weights && c_.reduction == Reduction::kMean ? BatchReduce::kNone
                                                              : reduce_kind(c_.reduction);
  }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {2 * static_cast<double>(in[0][0]), "2*B (gather, add)"};
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return static_cast<std::size_t>(in[0].shape()[0]) * sizeof(double);
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const std::int64_t rows = ctx.inputs[0].shape()[0], classes = ctx.inputs[0].shape()[1];
      const T* lp = ctx.inputs[0].data<T>();
      const std::int32_t* labels = ctx.inputs[1].data<std::int32_t>();
      const T* w = c_.has_weights ? ctx.inputs[2].data<T>() : nullptr;
      check_labels("nll_loss", labels, rows, classes);
      auto* terms = static_cast<double*>(ctx.workspace);
      for (std::int64_t i = 0; i < rows; ++i) {
        const T wi = w ? w[labels[i]] : T(1);
        terms[i] = static_cast<double>(-(wi * lp[i * classes + labels[i]]));
      }
      reduce_rows(c_, terms, rows, divisor(c_, w, labels, rows), ctx.output.data<T>());
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Value w = c_.has_weights ? in[2] : Value();
    std::vector<Value> grads = {nll_loss_backward(in[0], in[1], w, g, c_.reduction), Value()};
    if (c_.has_weights) grads.emplace_back();  // the weights: not differentiated (as PyTorch)
    return grads;
  }

 private:
  ClassLoss c_;
};
TBGRAD_REGISTER_OPS(NllLossOp);

// Inputs: log_probs, labels, [weights], grad.
class NllLossBackwardOp final : public Op {
 public:
  explicit NllLossBackwardOp(ClassLoss c) : c_(c) {}
  static constexpr OpTraits kKinds[] = {{.name = "nll_loss_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {static_cast<double>(in[0].numel()), "B*C (zeros, one value per row)"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const std::int64_t rows = ctx.inputs[0].shape()[0], classes = ctx.inputs[0].shape()[1];
      const std::int32_t* labels = ctx.inputs[1].data<std::int32_t>();
      const T* w = c_.has_weights ? ctx.inputs[2].data<T>() : nullptr;
      const T* g = ctx.inputs[c_.has_weights ? 3 : 2].data<T>();
      check_labels("nll_loss_backward", labels, rows, classes);
      const bool each = c_.reduction == Reduction::kNone;
      const T scale = each ? T(1) : static_cast<T>(g[0] / divisor(c_, w, labels, rows));
      T* out = ctx.output.data<T>();
      parallel_for(rows, row_grain(classes), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          T* row = out + i * classes;
          std::fill(row, row + classes, T(0));
          const T wi = w ? w[labels[i]] : T(1);
          row[labels[i]] = -(wi * (each ? g[i] : scale));
        }
      });
    });
  }

 private:
  ClassLoss c_;
};
TBGRAD_REGISTER_OPS(NllLossBackwardOp);

// Inputs: logits [B, C], labels [B], [weights [C]].
class CrossEntropyOp final : public Op {
 public:
  explicit CrossEntropyOp(ClassLoss c) : c_(c) {}
  static constexpr OpTraits kKinds[] = {{.name = "cross_entropy"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  // Note [Batch means]: a class-weighted mean is not a mean over the rows.
  BatchReduce batch_reduce() const override {
    return c_.has_weights && c_.reduction == Reduction::kMean ? BatchReduce::kNone
                                                              : reduce_kind(c_.reduction);
  }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {6 * static_cast<double>(in[0].numel()), "6*B*C (max, sub, exp, add, smoothing)"};
  }
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return static_cast<std::size_t>(in[0].shape()[0]) * sizeof(double);
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const std::int64_t rows = ctx.inputs[0].shape()[0], classes = ctx.inputs[0].shape()[1];
      const T* x = ctx.inputs[0].data<T>();
      const std::int32_t* labels = ctx.inputs[1].data<std::int32_t>();
      const T* w = c_.has_weights ? ctx.inputs[2].data<T>() : nullptr;
      check_labels("softmax_cross_entropy", labels, rows, classes);
      const T keep = static_cast<T>(1 - c_.smoothing);
      const T spread = static_cast<T>(c_.smoothing / static_cast<double>(classes));
      auto* terms = static_cast<double*>(ctx.workspace);
      parallel_for(rows, row_grain(classes), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const T* xr = x + i * classes;
          T m = xr[0];
          for (std::int64_t j = 1; j < classes; ++j) m = std::max(m, xr[j]);
          T s = 0;
          for (std::int64_t j = 0; j < classes; ++j) s += std::exp(xr[j] - m);
          const T lse = m + std::log(s);
          const std::int32_t y = labels[i];
          // -sum_c q[c] (x[c] - lse): the label's term, then the smoothing's.
          T loss = keep * (w ? w[y] : T(1)) * (lse - xr[y]);
          if (c_.smoothing != 0) {
            T smooth = 0;
            for (std::int64_t j = 0; j < classes; ++j) smooth += (w ? w[j] : T(1)) * (lse - xr[j]);
            loss += spread * smooth;
          }
          terms[i] = static_cast<double>(loss);
        }
      });
      reduce_rows(c_, terms, rows, divisor(c_, w, labels, rows), ctx.output.data<T>());
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    CrossEntropyOptions o{.label_smoothing = c_.smoothing, .reduction = c_.reduction};
    if (c_.has_weights) o.weights = in[2];
    std::vector<Value> grads = {cross_entropy_backward(in[0], in[1], g, o), Value()};
    if (c_.has_weights) grads.emplace_back();  // the weights: not differentiated (as PyTorch)
    return grads;
  }

 private:
  ClassLoss c_;
};
TBGRAD_REGISTER_OPS(CrossEntropyOp);

// Inputs: logits, labels, [weights], grad.
class CrossEntropyBackwardOp final : public Op {
 public:
  explicit CrossEntropyBackwardOp(ClassLoss c) : c_(c) {}
  static constexpr OpTraits kKinds[] = {{.name = "cross_entropy_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {5 * static_cast<double>(in[0].numel()), "5*B*C"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const std::int64_t rows = ctx.inputs[0].shape()[0], classes = ctx.inputs[0].shape()[1];
      const T* x = ctx.inputs[0].data<T>();
      const std::int32_t* labels = ctx.inputs[1].data<std::int32_t>();
      const T* w = c_.has_weights ? ctx.inputs[2].data<T>() : nullptr;
      const T* g = ctx.inputs[c_.has_weights ? 3 : 2].data<T>();
      check_labels("cross_entropy_backward", labels, rows, classes);
      const bool each = c_.reduction == Reduction::kNone;
      const T scale = each ? T(1) : static_cast<T>(g[0] / divisor(c_, w, labels, rows));
      const T keep = static_cast<T>(1 - c_.smoothing);
      const T spread = static_cast<T>(c_.smoothing / static_cast<double>(classes));
      T weight_sum = 0;  // sum_c w[c]
      for (std::int64_t j = 0; j < classes; ++j) weight_sum += w ? w[j] : T(1);
      T* gx = ctx.output.data<T>();
      parallel_for(rows, row_grain(classes), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const T* xr = x + i * classes;
          T* out = gx + i * classes;
          const std::int32_t y = labels[i];
          const T s = each ? g[i] : scale;
          const T wy = w ? w[y] : T(1);
          // d/dx[c] = (sum_c' q[c']) softmax[c] - q[c], times s.
          const T total_q = keep * wy + spread * weight_sum;
          T m = xr[0];
          for (std::int64_t j = 1; j < classes; ++j) m = std::max(m, xr[j]);
          T sum = 0;
          for (std::int64_t j = 0; j < classes; ++j) sum += (out[j] = std::exp(xr[j] - m));
          const T f = s * total_q / sum;
          for (std::int64_t j = 0; j < classes; ++j) {
            out[j] = out[j] * f - s * spread * (w ? w[j] : T(1));
          }
          out[y] -= s * keep * wy;
        }
      });
    });
  }

 private:
  ClassLoss c_;
};
TBGRAD_REGISTER_OPS(CrossEntropyBackwardOp);

// The shape rule of the class-index losses: scores [B, C] (B, C >= 1), labels [B] i32,
// weights [C] of the scores' dtype.
void check_class_loss(const char* op, const char* scores_name, const Value& scores,
                      const Value& labels, const Value& weights) {
  detail::require_same_graph(op, scores, labels);
  detail::require_float(op, scores);
  detail::require_rank(op, scores, 2, scores_name);
  if (labels.dtype() != DType::kI32) {
    shape_error(op, "labels " + labels.describe() +
                        " must be i32 class indices (use Graph::input_labels)");
  }
  if (labels.shape().rank() != 1 || labels.shape()[0] != scores.shape()[0]) {
    shape_error(op, "labels " + labels.describe() + " must be [" +
                        std::to_string(scores.shape()[0]) + "], one per row of " + scores_name +
                        " " + scores.describe());
  }
  if (scores.shape()[0] < 1 || scores.shape()[1] < 1) {
    shape_error(op, std::string(scores_name) + " " + scores.describe() +
                        " must have at least one row and one class");
  }
  if (weights.valid()) {
    detail::require_same_graph(op, scores, weights);
    detail::require_float(op, weights);
    detail::require_same_dtype(op, scores, weights);
    if (!(weights.shape() == Shape{scores.shape()[1]})) {
      shape_error(op, "class weights " + weights.describe() + " must be [" +
                          std::to_string(scores.shape()[1]) + "], one per class of " +
                          scores_name + " " + scores.describe());
    }
  }
}

Shape class_loss_shape(Reduction r, const Value& scores) {
  return r == Reduction::kNone ? Shape{scores.shape()[0]} : Shape{};
}

void check_class_grad(const char* op, Reduction r, const Value& scores, const Value& grad) {
  detail::require_same_graph(op, scores, grad);
  detail::require_same_dtype(op, scores, grad);
  const Shape want = class_loss_shape(r, scores);
  if (!(grad.shape() == want)) {
    shape_error(op, "gradient " + grad.describe() + " must have the loss's shape " + want.str() +
                        " (reduction " + reduction_name(r) + ")");
  }
}

void check_smoothing(const char* op, double s, const Value& logits) {
  if (!(s >= 0 && s <= 1)) {
    shape_error(op, "label_smoothing must be in [0, 1], got " + std::to_string(s) +
                        " for the logits " + logits.describe());
  }
}

}  // namespace

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::kMean:
      return "mean";
    case Reduction::kSum:
      return "sum";
    case Reduction::kNone:
      break;
  }
  return "none";
}

Value mse_loss(Value pred, Value target, Reduction r) {
  return point_loss(PointKind::kMse, pred, target, Value(), 0, r);
}
Value l1_loss(Value pred, Value target, Reduction r) {
  return point_loss(PointKind::kL1, pred, target, Value(), 0, r);
}
Value huber_loss(Value pred, Value target, double delta, Reduction r) {
  return point_loss(PointKind::kHuber, pred, target, Value(), delta, r);
}
Value binary_cross_entropy_with_logits(Value logits, Value target, Reduction r) {
  return point_loss(PointKind::kBce, logits, target, Value(), 0, r);
}
Value binary_cross_entropy_with_logits(Value logits, Value target, Value pos_weight,
                                       Reduction r) {
  if (!pos_weight.valid()) {
    shape_error("binary_cross_entropy_with_logits",
                "pos_weight is an invalid (empty) Value (leave it out for none)");
  }
  return point_loss(PointKind::kBce, logits, target, pos_weight, 0, r);
}

Value mse_loss_backward(Value pred, Value target, Value grad, Reduction r, LossWrt wrt) {
  return point_backward(PointKind::kMse, pred, target, Value(), grad, 0, r, wrt);
}
Value l1_loss_backward(Value pred, Value target, Value grad, Reduction r, LossWrt wrt) {
  return point_backward(PointKind::kL1, pred, target, Value(), grad, 0, r, wrt);
}
Value huber_loss_backward(Value pred, Value target, Value grad, double delta, Reduction r,
                          LossWrt wrt) {
  if (!(delta > 0 && std::isfinite(delta))) {
    shape_error("huber_loss_backward", "delta must be positive and finite, got " +
                                           std::to_string(delta));
  }
  return point_backward(PointKind::kHuber, pred, target, Value(), grad, delta, r, wrt);
}
Value binary_cross_entropy_with_logits_backward(Value logits, Value target, Value pos_weight,
                                                Value grad, Reduction r, LossWrt wrt) {
  return point_backward(PointKind::kBce, logits, target, pos_weight, grad, 0, r, wrt);
}

Value nll_loss(Value log_probs, Value labels, Reduction r) {
  return nll_loss(log_probs, labels, Value(), r);
}

Value nll_loss(Value log_probs, Value labels, Value weights, Reduction r) {
  check_class_loss("nll_loss", "log_probs", log_probs, labels, weights);
  std::vector<Value> ins = {log_probs, labels};
  if (weights.valid()) ins.push_back(weights);
  return log_probs.graph().add_op(
      std::make_shared<NllLossOp>(ClassLoss{0, r, weights.valid()}), ins,
      class_loss_shape(r, log_probs), log_probs.dtype());
}

Value nll_loss_backward(Value log_probs, Value labels, Value weights, Value grad, Reduction r) {
  const char* op = "nll_loss_backward";
  check_class_loss(op, "log_probs", log_probs, labels, weights);
  check_class_grad(op, r, log_probs, grad);
  std::vector<Value> ins = {log_probs, labels};
  if (weights.valid()) ins.push_back(weights);
  ins.push_back(grad);
  return log_probs.graph().add_op(
      std::make_shared<NllLossBackwardOp>(ClassLoss{0, r, weights.valid()}), ins,
      log_probs.shape(), log_probs.dtype());
}

Value softmax_cross_entropy(Value logits, Value labels, const CrossEntropyOptions& o) {
  const char* op = "softmax_cross_entropy";
  check_class_loss(op, "logits", logits, labels, o.weights);
  check_smoothing(op, o.label_smoothing, logits);
  if (o.label_smoothing == 0 && !o.weights.valid() && o.reduction == Reduction::kMean) {
    return softmax_cross_entropy(logits, labels);  // the same op, the same bits
  }
  std::vector<Value> ins = {logits, labels};
  if (o.weights.valid()) ins.push_back(o.weights);
  return logits.graph().add_op(
      std::make_shared<CrossEntropyOp>(ClassLoss{o.label_smoothing, o.reduction, o.weights.valid()}),
      ins, class_loss_shape(o.reduction, logits), logits.dtype());
}

Value cross_entropy_backward(Value logits, Value labels, Value grad,
                             const CrossEntropyOptions& o) {
  const char* op = "cross_entropy_backward";
  check_class_loss(op, "logits", logits, labels, o.weights);
  check_smoothing(op, o.label_smoothing, logits);
  check_class_grad(op, o.reduction, logits, grad);
  std::vector<Value> ins = {logits, labels};
  if (o.weights.valid()) ins.push_back(o.weights);
  ins.push_back(grad);
  return logits.graph().add_op(std::make_shared<CrossEntropyBackwardOp>(
                                   ClassLoss{o.label_smoothing, o.reduction, o.weights.valid()}),
                               ins, logits.shape(), logits.dtype());
}

}  // namespace tbgrad
