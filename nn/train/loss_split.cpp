#include "nn/train/loss_split.hpp"

#include <cmath>
#include <vector>

#include "graph/op.hpp"

namespace tbgrad::nn::detail {

namespace {

// One term of a loss (Note [Loss split]): its node, what it is, its factor in the loss.
struct Term {
  enum Kind { kConstant, kMean, kSum, kOther } kind;
  int node;
  double factor;
};

// The loss's terms, in a fixed order (depth first, inputs in order). More than kMostTerms
// (a loss added to itself over and over) is not worth splitting: one kOther term then.
constexpr std::size_t kMostTerms = 4096;

std::vector<Term> terms_of(const Graph& g, int loss) {
  // depends[id]: the node reads a graph input (ids grow along the graph's edges).
  std::vector<char> depends(static_cast<std::size_t>(g.size()), 0);
  for (int id = 0; id < g.size(); ++id) {
    const Node& n = g.node(id);
    bool d = n.kind == NodeKind::kInput || n.kind == NodeKind::kLabels;
    for (const int in : n.inputs) d = d || depends[static_cast<std::size_t>(in)];
    depends[static_cast<std::size_t>(id)] = d;
  }
  std::vector<Term> terms;
  std::vector<std::pair<int, double>> todo = {{loss, 1.0}};
  while (!todo.empty()) {
    if (terms.size() > kMostTerms) return {{Term::kOther, loss, 1.0}};
    const auto [id, factor] = todo.back();
    todo.pop_back();
    const Node& n = g.node(id);
    if (!depends[static_cast<std::size_t>(id)]) {
      terms.push_back({Term::kConstant, id, factor});
      continue;
    }
    const BatchReduce r = n.kind == NodeKind::kOp ? n.op->batch_reduce() : BatchReduce::kNone;
    if (r == BatchReduce::kLinear) {
      // In reverse, so that the inputs come off the stack in order.
      for (std::size_t i = n.inputs.size(); i-- > 0;) {
        todo.push_back({n.inputs[i], factor * n.op->linear_factor(i)});
      }
      continue;
    }
    terms.push_back({r == BatchReduce::kMean  ? Term::kMean
                     : r == BatchReduce::kSum ? Term::kSum
                                              : Term::kOther,
                     id, factor});
  }
  return terms;
}

std::string term_name(const Graph& g, int id) {
  const Node& n = g.node(id);
  return n.kind == NodeKind::kOp ? std::string(n.op->name()) : "the graph's input " + n.name;
}

// Elements per example of a term's input 0, the same at both sizes; 0 when it is not so. (Its
// layout does not matter: a [features, B] value holds each example's elements too.)
std::int64_t per_example(const Graph& g1, int id1, std::int64_t b1, const Graph& g2, int id2,
                         std::int64_t b2) {
  const Node& n1 = g1.node(id1);
  const Node& n2 = g2.node(id2);
  if (n1.inputs.empty() || n2.inputs.empty()) return 0;
  const std::int64_t e1 = g1.node(n1.inputs[0]).shape.numel();
  const std::int64_t e2 = g2.node(n2.inputs[0]).shape.numel();
  if (e1 % b1 != 0) return 0;
  const std::int64_t r = e1 / b1;
  return r > 0 && e2 == r * b2 ? r : 0;
}

bool close(double a, double b) {
  return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b));
}

}  // namespace

LossSplitChoice classify_loss(const Graph& g1, const ModelGraph& m1, std::int64_t b1,
                              const Graph& g2, const ModelGraph& m2, std::int64_t b2) {
  const std::vector<Term> t1 = terms_of(g1, m1.loss.id());
  const std::vector<Term> t2 = terms_of(g2, m2.loss.id());
  const auto whole = [](const std::string& why) {
    return LossSplitChoice{LossSplit::kWhole, why};
  };
  if (t1.size() != t2.size()) {
    return whole("the loss has " + std::to_string(t1.size()) + " terms for " +
                 std::to_string(b1) + " examples but " + std::to_string(t2.size()) + " for " +
                 std::to_string(b2));
  }
  int means = 0, sums = 0, constants = 0;
  for (std::size_t i = 0; i < t1.size(); ++i) {
    const Term& a = t1[i];
    const Term& b = t2[i];
    const std::string name = term_name(g1, a.node);
    if (a.kind != b.kind) {
      return whole("the loss's term " + name + " differs between batch sizes " +
                   std::to_string(b1) + " and " + std::to_string(b2));
    }
    if (a.kind == Term::kOther) {
      return whole("the loss's term " + name +
                   " is neither a mean nor a sum over the examples (Note [Batch means]: a "
                   "class-weighted mean, a product, an op that does not say)");
    }
    if (a.kind == Term::kConstant) {
      if (!close(a.factor, b.factor)) {
        return whole("the loss's term " + name + " has a factor that depends on the batch size");
      }
      ++constants;
      continue;
    }
    if (per_example(g1, a.node, b1, g2, b.node, b2) == 0) {
      return whole("the loss's term " + name + " reads a value without the same number of "
                   "elements per example at every batch size");
    }
    if (a.kind == Term::kMean && close(a.factor, b.factor)) {
      ++means;
    } else if (a.kind == Term::kSum && close(a.factor, b.factor)) {
      ++sums;
    } else if (a.kind == Term::kSum &&
               close(a.factor * static_cast<double>(b1), b.factor * static_cast<double>(b2))) {
      ++means;  // a sum divided by the batch: mean(x)
    } else {
      return whole("the loss's term " + name + " has a factor that depends on the batch size "
                   "other than as a mean's");
    }
  }
  if (sums > 0 && (means > 0 || constants > 0)) {
    return whole(means > 0 ? "the loss adds a sum over the examples to a mean over them"
                           : "the loss adds a sum over the examples to a term that does not "
                             "depend on them");
  }
  if (sums > 0) return {LossSplit::kSum, "a sum over the examples"};
  return {LossSplit::kMean, "a mean over the examples"};
}

}  // namespace tbgrad::nn::detail
