#include "autodiff/gradcheck.hpp"

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

#include "autodiff/grad.hpp"
#include "graph/executor.hpp"
#include "ops/elementwise.hpp"
#include "ops/reduce.hpp"

namespace tbgrad {

std::string GradcheckResult::report() const {
  std::ostringstream s;
  s << (ok ? "gradcheck passed" : "gradcheck FAILED") << (reentrant ? "" : " (backward not reentrant)")
    << "\n";
  for (const GradcheckInputResult& r : inputs) {
    s << "  " << (r.ok ? "ok  " : "FAIL") << " " << r.name << " " << r.shape.str() << ": checked "
      << r.checked << ", worst at [" << r.worst_index << "] analytic " << r.analytic
      << " numeric " << r.numeric << " |err| " << r.max_abs_error << " (" << r.max_ratio
      << " of tolerance)\n";
  }
  return s.str();
}

GradcheckResult gradcheck(Value out, const GradcheckValues& wrt_list,
                          const GradcheckFeeds& feeds_list, const GradcheckOptions& opt) {
  const std::span<const Value> wrt = wrt_list.items();
  const std::span<const std::pair<Value, Tensor>> feeds = feeds_list.items();
  if (!out.valid()) throw Error("gradcheck: output is an invalid (empty) Value");
  Graph& g = out.graph();
  if (out.dtype() != DType::kF64) {
    throw Error("gradcheck: needs a float64 graph (build it with Graph g(DType::kF64)); " +
                out.describe() + " is " + dtype_name(out.dtype()));
  }

  // Private copies of the fed tensors: gradcheck perturbs them.
  std::vector<std::pair<Value, Tensor>> bound;
  for (const auto& [v, t] : feeds) bound.emplace_back(v, t.clone());

  // The tensor holding each wrt value: a parameter's storage or our copy of an input.
  std::vector<Tensor> targets;
  for (const Value& w : wrt) {
    const Node& n = g.node(w);
    Tensor t;
    if (n.kind == NodeKind::kParam || n.kind == NodeKind::kConstant) {
      t = n.value;
    } else {
      for (const auto& [v, bt] : bound) {
        if (v == w) t = bt;
      }
      if (!t.defined() || t.numel() == 0) {
        if (n.kind == NodeKind::kInput) {
          throw Error("gradcheck: input " + w.describe() + " is in wrt but not in feeds");
        }
      }
    }
    if (n.kind == NodeKind::kOp || n.kind == NodeKind::kLabels) {
      throw Error("gradcheck: " + w.describe() + " must be a parameter, constant or float input");
    }
    targets.push_back(t);
  }

  // Scalar objective.
  Value objective = out;
  if (out.shape().numel() != 1) {
    Tensor r(out.shape(), DType::kF64);
    std::mt19937_64 rng(opt.seed);
    for (std::int64_t i = 0; i < r.numel(); ++i) {
      r.set(i, static_cast<double>(rng() >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    }
    objective = sum(mul(out, g.constant(r, "gradcheck_projection")));
  }

  std::vector<Value> grads = grad(objective, wrt);
  Executor backward(g, {objective, grads});
  Executor forward(g, {objective});
  for (const auto& [v, t] : bound) {
    backward.bind(v, t);
    forward.bind(v, t);
  }

  backward.run();
  std::vector<Tensor> analytic;
  for (const Value& gv : grads) analytic.push_back(backward.get(gv).clone());
  backward.run();  // reentrancy: a second backward must give the same bits

  GradcheckResult result;
  for (std::size_t k = 0; k < grads.size(); ++k) {
    const Tensor& again = backward.get(grads[k]);
    if (std::memcmp(again.raw(), analytic[k].raw(), again.nbytes()) != 0) result.reentrant = false;
  }

  auto eval = [&] {
    forward.run();
    return forward.get(objective).at(0);
  };

  for (std::size_t k = 0; k < wrt.size(); ++k) {
    GradcheckInputResult r;
    r.name = wrt[k].name();
    r.shape = wrt[k].shape();
    const Tensor& x = targets[k];
    const std::int64_t n = x.numel();
    std::int64_t step = 1;
    if (opt.max_elements_per_input > 0 && n > opt.max_elements_per_input) {
      step = (n + opt.max_elements_per_input - 1) / opt.max_elements_per_input;
    }
    for (std::int64_t i = 0; i < n; i += step) {
      const double orig = x.at(i);
      x.set(i, orig + opt.eps);
      const double fp = eval();
      x.set(i, orig - opt.eps);
      const double fm = eval();
      x.set(i, orig);
      const double numeric = (fp - fm) / (2 * opt.eps);
      const double a = analytic[k].at(i);
      const double err = std::abs(a - numeric);
      const double ratio = err / (opt.atol + opt.rtol * std::abs(numeric));
      ++r.checked;
      // A NaN ratio compares false and so counts as the worst element.
      if (r.worst_index < 0 || !(ratio <= r.max_ratio)) {
        r.max_ratio = std::isnan(ratio) ? INFINITY : ratio;
        r.max_abs_error = err;
        r.worst_index = i;
        r.analytic = a;
        r.numeric = numeric;
      }
    }
    r.ok = r.max_ratio <= 1.0;
    result.ok = result.ok && r.ok;
    result.inputs.push_back(r);
  }
  result.ok = result.ok && result.reentrant;
  return result;
}

}  // namespace tbgrad
