// The losses' cases (ops/loss.hpp): every loss at each reduction, odd sizes, one element, one
// class, sizes past one chunk of the deterministic sum (4096 elements), and every gradient
// kernel against the numeric gradient of its loss, with respect to the prediction and the target.
// Class weights and pos_weight are constants of the graph (PyTorch does not differentiate them):
// their values are written into the PyTorch expression.
#include <string>
#include <vector>

#include "op_case_util.hpp"

namespace tbgrad::testing::cases {
namespace {

const Reduction kReductions[] = {Reduction::kMean, Reduction::kSum, Reduction::kNone};

std::string py_reduction(Reduction r) {
  return std::string("'") + reduction_name(r) + "'";
}

// Values 0.5, 0.75, 1.0, 1.25, ... : class weights and positive weights.
std::vector<double> weight_values(std::int64_t n) {
  std::vector<double> v;
  for (std::int64_t i = 0; i < n; ++i) v.push_back(0.5 + 0.25 * static_cast<double>(i % 7));
  return v;
}

Value weight_constant(Graph& g, std::int64_t n) {
  Tensor t(Shape{n}, g.dtype());
  const std::vector<double> v = weight_values(n);
  for (std::int64_t i = 0; i < n; ++i) t.set(i, v[static_cast<std::size_t>(i)]);
  return g.constant(t, "weights");
}

// torch.tensor([...], dtype=x.dtype)
std::string py_weights(std::int64_t n, const std::string& like) {
  std::string s = "torch.tensor([";
  const std::vector<double> v = weight_values(n);
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + py_float(v[i]);
  return s + "], dtype=" + like + ".dtype)";
}

struct PointLoss {
  const char* op;
  const char* torch;  // F.<name>(x, t, <extra>reduction=...)
  std::string extra;
  double lo, hi;  // the inputs' range
  Value (*forward)(Value, Value, Reduction);
  Value (*backward)(Value, Value, Value, Reduction, LossWrt);
};

void add_point_losses(Table& t) {
  const PointLoss losses[] = {
      {"mse_loss", "F.mse_loss", "", -1, 1, [](Value x, Value y, Reduction r) { return mse_loss(x, y, r); },
       &mse_loss_backward},
      {"l1_loss", "F.l1_loss", "", -1, 1, [](Value x, Value y, Reduction r) { return l1_loss(x, y, r); },
       &l1_loss_backward},
      // delta 0.5 with inputs in [-1, 1]: both branches.
      {"huber_loss", "F.huber_loss", "delta=0.5, ", -1, 1,
       [](Value x, Value y, Reduction r) { return huber_loss(x, y, 0.5, r); },
       [](Value x, Value y, Value g, Reduction r, LossWrt w) {
         return huber_loss_backward(x, y, g, 0.5, r, w);
       }},
      {"binary_cross_entropy_with_logits", "F.binary_cross_entropy_with_logits", "", -4, 4,
       [](Value x, Value y, Reduction r) { return binary_cross_entropy_with_logits(x, y, r); },
       [](Value x, Value y, Value g, Reduction r, LossWrt w) {
         return binary_cross_entropy_with_logits_backward(x, y, Value(), g, r, w);
       }},
  };
  for (const PointLoss& l : losses) {
    const bool bce = std::string(l.op) == "binary_cross_entropy_with_logits";
    const double tlo = bce ? 0.0 : l.lo, thi = bce ? 1.0 : l.hi;
    auto fwd = l.forward;
    auto bwd = l.backward;
    for (const Reduction r : kReductions) {
      for (const Shape& s : {Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 3, 4}, Shape{70, 65}}) {
        t.push_back({.op = l.op,
                     .name = std::string(reduction_name(r)) + "_" + shape_name(s),
                     .inputs = {uniform("x", s, l.lo, l.hi), uniform("y", s, tlo, thi)},
                     .build = [fwd, r](Graph&, Inputs in) { return fwd(in[0], in[1], r); },
                     .torch = std::string(l.torch) + "(x, y, " + l.extra +
                              "reduction=" + py_reduction(r) + ")"});
      }
      for (const Shape& s : {Shape{1}, Shape{3, 5}}) {
        const Shape gs = r == Reduction::kNone ? s : Shape{};
        // With respect to the prediction (inputs x, y, g) and to the target (inputs y, x, g).
        t.push_back({.op = std::string(l.op) + "_backward",
                     .name = std::string(reduction_name(r)) + "_x_" + shape_name(s),
                     .inputs = {uniform("x", s, l.lo, l.hi), uniform("y", s, tlo, thi),
                                uniform("g", gs)},
                     .build = [bwd, r](Graph&, Inputs in) {
                       return bwd(in[0], in[1], in[2], r, LossWrt::kPrediction);
                     },
                     .torch = "vjp(lambda z: " + std::string(l.torch) + "(z, y, " + l.extra +
                              "reduction=" + py_reduction(r) + "), x, g)",
                     .gradient_of = [fwd, r](Graph&, Inputs in) { return fwd(in[0], in[1], r); }});
        t.push_back({.op = std::string(l.op) + "_backward",
                     .name = std::string(reduction_name(r)) + "_target_" + shape_name(s),
                     .inputs = {uniform("y", s, tlo, thi), uniform("x", s, l.lo, l.hi),
                                uniform("g", gs)},
                     .build = [bwd, r](Graph&, Inputs in) {
                       return bwd(in[1], in[0], in[2], r, LossWrt::kTarget);
                     },
                     .torch = "vjp(lambda z: " + std::string(l.torch) + "(x, z, " + l.extra +
                              "reduction=" + py_reduction(r) + "), y, g)",
                     .gradient_of = [fwd, r](Graph&, Inputs in) { return fwd(in[1], in[0], r); }});
      }
    }
  }
  // pos_weight, one per class.
  for (const Reduction r : kReductions) {
    for (const Shape& s : {Shape{4, 3}, Shape{2, 3, 5}, Shape{1, 1}}) {
      const std::int64_t c = s[s.rank() - 1];
      t.push_back({.op = "binary_cross_entropy_with_logits",
                   .name = std::string(reduction_name(r)) + "_pos_weight_" + shape_name(s),
                   .inputs = {uniform("x", s, -4, 4), uniform("y", s, 0, 1)},
                   .build = [r, c](Graph& g, Inputs in) {
                     return binary_cross_entropy_with_logits(in[0], in[1], weight_constant(g, c), r);
                   },
                   .torch = "F.binary_cross_entropy_with_logits(x, y, pos_weight=" +
                            py_weights(c, "x") + ", reduction=" + py_reduction(r) + ")"});
    }
    const Shape s{3, 4};
    const Shape gs = r == Reduction::kNone ? s : Shape{};
    for (const LossWrt w : {LossWrt::kPrediction, LossWrt::kTarget}) {
      const bool px = w == LossWrt::kPrediction;
      t.push_back({.op = "binary_cross_entropy_with_logits_backward",
                   .name = std::string(reduction_name(r)) + "_pos_weight_" + (px ? "x" : "target"),
                   .inputs = {px ? uniform("x", s, -4, 4) : uniform("y", s, 0, 1),
                              px ? uniform("y", s, 0, 1) : uniform("x", s, -4, 4),
                              uniform("g", gs)},
                   .build = [r, w, px](Graph& g, Inputs in) {
                     return binary_cross_entropy_with_logits_backward(
                         px ? in[0] : in[1], px ? in[1] : in[0], weight_constant(g, 4), in[2], r, w);
                   },
                   .torch = px ? "vjp(lambda z: F.binary_cross_entropy_with_logits(z, y, pos_weight=" +
                                     py_weights(4, "x") + ", reduction=" + py_reduction(r) + "), x, g)"
                               : "vjp(lambda z: F.binary_cross_entropy_with_logits(x, z, pos_weight=" +
                                     py_weights(4, "x") + ", reduction=" + py_reduction(r) + "), y, g)",
                   .gradient_of = [r, px](Graph& g, Inputs in) {
                     return binary_cross_entropy_with_logits(px ? in[0] : in[1], px ? in[1] : in[0],
                                                             weight_constant(g, 4), r);
                   }});
    }
  }
}

void add_class_losses(Table& t) {
  const std::pair<int, int> sizes[] = {{1, 1}, {1, 4}, {3, 5}, {7, 3}, {100, 7}};
  for (const Reduction r : kReductions) {
    for (const bool weighted : {false, true}) {
      const std::string wname = weighted ? "_weighted" : "";
      for (const auto& [b, c] : sizes) {
        const std::string geometry = "batch" + str(b) + "_classes" + str(c);
        const std::string w = weighted ? "weight=" + py_weights(c, "x") + ", " : "";
        const std::int64_t cc = c;
        t.push_back({.op = "nll_loss",
                     .name = std::string(reduction_name(r)) + wname + "_" + geometry,
                     .inputs = {uniform("x", {b, c}, -3, 0), labels("labels", {b}, c)},
                     .build = [r, weighted, cc](Graph& g, Inputs in) {
                       return weighted ? nll_loss(in[0], in[1], weight_constant(g, cc), r)
                                       : nll_loss(in[0], in[1], r);
                     },
                     .torch = "F.nll_loss(x, labels, " + w + "reduction=" + py_reduction(r) + ")"});
        for (const double s : {0.0, 0.1, 1.0}) {
          if (s == 0.0 && !weighted && r == Reduction::kMean) continue;  // the core op's cases
          t.push_back({.op = "cross_entropy",
                       .name = std::string(reduction_name(r)) + wname + "_smoothing" +
                               str(static_cast<int>(s * 10)) + "_" + geometry,
                       .inputs = {uniform("x", {b, c}, -3, 3), labels("labels", {b}, c)},
                       .build = [r, weighted, cc, s](Graph& g, Inputs in) {
                         CrossEntropyOptions o{.label_smoothing = s, .reduction = r};
                         if (weighted) o.weights = weight_constant(g, cc);
                         return softmax_cross_entropy(in[0], in[1], o);
                       },
                       .torch = "F.cross_entropy(x, labels, " + w + "label_smoothing=" +
                                py_float(s) + ", reduction=" + py_reduction(r) + ")"});
        }
      }
      for (const auto& [b, c] : {std::pair{1, 4}, std::pair{5, 3}}) {
        const std::string geometry = "batch" + str(b) + "_classes" + str(c);
        const std::string w = weighted ? "weight=" + py_weights(c, "x") + ", " : "";
        const std::int64_t cc = c;
        const Shape gs = r == Reduction::kNone ? Shape{b} : Shape{};
        t.push_back({.op = "nll_loss_backward",
                     .name = std::string(reduction_name(r)) + wname + "_" + geometry,
                     .inputs = {uniform("x", {b, c}, -3, 0), labels("labels", {b}, c),
                                uniform("g", gs)},
                     .build = [r, weighted, cc](Graph& g, Inputs in) {
                       return nll_loss_backward(in[0], in[1],
                                                weighted ? weight_constant(g, cc) : Value(), in[2], r);
                     },
                     .torch = "vjp(lambda z: F.nll_loss(z, labels, " + w + "reduction=" +
                              py_reduction(r) + "), x, g)",
                     .gradient_of = [r, weighted, cc](Graph& g, Inputs in) {
                       return nll_loss(in[0], in[1], weighted ? weight_constant(g, cc) : Value(), r);
                     }});
        t.push_back({.op = "cross_entropy_backward",
                     .name = std::string(reduction_name(r)) + wname + "_" + geometry,
                     .inputs = {uniform("x", {b, c}, -3, 3), labels("labels", {b}, c),
                                uniform("g", gs)},
                     .build = [r, weighted, cc](Graph& g, Inputs in) {
                       CrossEntropyOptions o{.label_smoothing = 0.2, .reduction = r};
                       if (weighted) o.weights = weight_constant(g, cc);
                       return cross_entropy_backward(in[0], in[1], in[2], o);
                     },
                     .torch = "vjp(lambda z: F.cross_entropy(z, labels, " + w +
                              "label_smoothing=0.2, reduction=" + py_reduction(r) + "), x, g)",
                     .gradient_of = [r, weighted, cc](Graph& g, Inputs in) {
                       CrossEntropyOptions o{.label_smoothing = 0.2, .reduction = r};
                       if (weighted) o.weights = weight_constant(g, cc);
                       return softmax_cross_entropy(in[0], in[1], o);
                     }});
      }
    }
  }
}

}  // namespace

void add_loss_cases(Table& t) {
  add_point_losses(t);
  add_class_losses(t);
}

}  // namespace tbgrad::testing::cases
