#include "autodiff/grad.hpp"

#include "graph/op.hpp"
#include "ops/elementwise.hpp"

namespace tbgrad {

std::vector<Value> grad(Value loss, std::span<const Value> wrt) {
  if (!loss.valid()) throw Error("grad: loss is an invalid (empty) Value");
  Graph& g = loss.graph();
  if (loss.shape().numel() != 1) {
    throw ShapeError("grad: loss must be a scalar (one element), got " + loss.describe() +
                     "; reduce it first, e.g. with sum() or mean()");
  }
  if (loss.dtype() == DType::kI32) throw ShapeError("grad: loss " + loss.describe() + " is not floating point");
  for (const Value& w : wrt) {
    if (!w.valid() || &w.graph() != &g) {
      throw Error("grad: " + w.describe() + " is not a value of the loss's graph");
    }
  }

  const int end = loss.id() + 1;  // nodes after the loss cannot affect it
  // Which nodes depend on some wrt value: gradients flow only through those.
  std::vector<char> depends(static_cast<std::size_t>(end), 0);
  for (const Value& w : wrt) {
    if (w.id() < end) depends[static_cast<std::size_t>(w.id())] = 1;
  }
  for (int id = 0; id < end; ++id) {
    const Node& n = g.node(id);
    for (int in : n.inputs) {
      if (depends[static_cast<std::size_t>(in)]) depends[static_cast<std::size_t>(id)] = 1;
    }
  }

  std::vector<Value> grads(static_cast<std::size_t>(end));
  if (depends[static_cast<std::size_t>(loss.id())]) {
    Tensor one(loss.shape(), loss.dtype());
    one.fill(1.0);
    grads[static_cast<std::size_t>(loss.id())] = g.constant(one, "grad_seed");
  }
  // Reverse creation order is a reverse topological order.
  for (int id = end - 1; id >= 0; --id) {
    const Value gy = grads[static_cast<std::size_t>(id)];
    if (!gy.valid()) continue;
    // Copy what we need: the VJP appends nodes and may reallocate the node list.
    const Node& node = g.node(id);
    if (node.kind != NodeKind::kOp) continue;
    std::shared_ptr<const Op> op = node.op;
    std::vector<Value> inputs;
    for (int in : node.inputs) inputs.emplace_back(&g, in);
    std::vector<Value> gin = op->vjp(inputs, Value(&g, id), gy);
    for (std::size_t j = 0; j < inputs.size() && j < gin.size(); ++j) {
      const Value& x = inputs[j];
      if (!gin[j].valid() || !depends[static_cast<std::size_t>(x.id())]) continue;
      if (!(gin[j].shape() == x.shape())) {
        throw Error(std::string("grad: internal error: the VJP of ") + op->name() +
                    " gave a gradient of shape " + gin[j].shape().str() + " for input " +
                    x.describe());
      }
      Value& acc = grads[static_cast<std::size_t>(x.id())];
      acc = acc.valid() ? add(acc, gin[j]) : gin[j];  // fan-out: contributions add up
    }
  }

  std::vector<Value> out;
  out.reserve(wrt.size());
  for (const Value& w : wrt) {
    Value gw = w.id() < end ? grads[static_cast<std::size_t>(w.id())] : Value();
    if (!gw.valid()) gw = g.constant(Tensor(w.shape(), w.dtype()), "zero_grad");
    out.push_back(gw);
  }
  return out;
}

std::vector<Value> grad(Value loss, std::initializer_list<Value> wrt) {
  return grad(loss, std::span<const Value>(wrt.begin(), wrt.size()));
}

Value grad(Value loss, Value wrt) { return grad(loss, {wrt})[0]; }

}  // namespace tbgrad
