#include "nn/train/contraction.hpp"

#include <span>
#include <string>

#include "autodiff/grad.hpp"

namespace tbgrad::nn::detail {

Plan::Plan(const ModelFn& model, const ParamStore& like, std::int64_t micro, const Context& why) {
  ParamStore scratch;  // the same names and shapes as `like`
  Graph g1, g2;
  const ModelGraph m1 = build_model(model, g1, scratch, micro, why);
  const ModelGraph m2 = build_model(model, g2, scratch, micro + 1, why);
  if (scratch.names() != like.names()) {
    throw Error(why(micro) + "model builder: creates other parameters than the store holds");
  }
  check_model(m1, g1, like.names(), micro, why(micro));
  check_model(m2, g2, like.names(), micro + 1, why(micro + 1));
  split = classify_loss(g1, m1, micro, g2, m2, micro + 1);
  if (split.split == LossSplit::kWhole) return;
  const std::vector<Value> grads1 = grad(m1.loss, g1.params());
  const std::vector<Value> grads2 = grad(m2.loss, g2.params());
  params.resize(grads1.size());
  nodes = g1.size();
  if (g2.size() != nodes) {
    // Graphs of one example can differ from larger ones (micro_batch_offsets): then every
    // gradient is summed over the micro-batches, which needs no node to match.
    if (micro == 1) {
      nodes = -1;
      return;
    }
    throw Error(why(micro) + "model builder: builds " + std::to_string(nodes) +
                " nodes (with their gradients) for " + std::to_string(micro) +
                " examples but " + std::to_string(g2.size()) + " for " +
                std::to_string(micro + 1) + "; it must build the same graph for every batch size");
  }
  auto rows_of = [&](int id) -> std::int64_t {  // rows per example, 0 if not batch-major
    const Shape s1 = g1.node(id).shape, s2 = g2.node(id).shape;
    if (s1.rank() < 1 || s1.rank() != s2.rank()) return 0;
    for (int d = 1; d < s1.rank(); ++d) {
      if (s1[d] != s2[d]) return 0;
    }
    const std::int64_t r = s2[0] - s1[0];
    return r > 0 && s1[0] == r * micro ? r : 0;
  };
  auto gather = [&](int id, bool scaled) {
    for (std::size_t i = 0; i < gathered.size(); ++i) {
      if (gathered[i].node == id && gathered[i].scaled == scaled) return i;
    }
    std::vector<std::int64_t> dims(g1.node(id).shape.dims().begin(),
                                   g1.node(id).shape.dims().end());
    const std::int64_t r = rows_of(id);
    dims[0] = r;
    gathered.push_back({id, scaled, r, Shape{std::span<const std::int64_t>(dims)}});
    return gathered.size() - 1;
  };
  for (std::size_t i = 0; i < grads1.size(); ++i) {
    const int id = grads1[i].id();
    const Node& n = g1.node(id);
    // Note [Batch contraction] (graph/op.hpp): an op summing over its inputs' rows, every
    // input batch-major with the same rows per example, a result that the batch does not
    // change.
    if (n.kind != NodeKind::kOp || !n.op->traits().sums_over_rows || n.inputs.empty() ||
        !(n.shape == g2.node(id).shape)) {
      continue;
    }
    const std::int64_t rows = rows_of(n.inputs[0]);
    bool all = rows > 0;
    for (const int in : n.inputs) all = all && rows_of(in) == rows;
    if (!all) continue;
    params[i].kind = GradPlan::kContracted;
    params[i].op = n.op;
    for (std::size_t k = 0; k < n.inputs.size(); ++k) {
      params[i].inputs.push_back(gather(n.inputs[k], k == 0));
    }
  }
}

Contraction::Contraction(const Plan& plan, std::int64_t batch, const Contraction* shared) {
  std::vector<Value> in;
  for (std::size_t k = 0; k < plan.gathered.size(); ++k) {
    std::vector<std::int64_t> dims(plan.gathered[k].example_shape.dims().begin(),
                                   plan.gathered[k].example_shape.dims().end());
    dims[0] *= batch;
    const Shape s{std::span<const std::int64_t>(dims)};
    in.push_back(g.input("gathered" + std::to_string(k), s));
    if (shared) {
      gathered.push_back(shared->gathered[k]);  // a handle to the same storage
    } else {
      gathered.emplace_back(s, DType::kF32);
    }
  }
  std::vector<Value> wanted;
  for (const GradPlan& p : plan.params) {
    Value v;
    if (p.kind == GradPlan::kContracted) {
      std::vector<Value> ins;
      for (const std::size_t k : p.inputs) ins.push_back(in[k]);
      v = p.op->apply_to(ins);
      if (!v.valid()) throw Error(std::string(p.op->name()) + " cannot be applied to a batch");
    }
    outputs.push_back(v);
    if (v.valid()) wanted.push_back(v);
  }
  ex = std::make_unique<Executor>(g, wanted);
  for (std::size_t k = 0; k < in.size(); ++k) ex->bind(in[k], gathered[k]);
}

}  // namespace tbgrad::nn::detail
