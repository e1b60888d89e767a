#include "graph/graph.hpp"

#include <utility>

#include "graph/op.hpp"

namespace tbgrad {

namespace {

// How an error message names a node: a leaf by its name, an op node (whose name is only its op's)
// by the expression that made it, down to the user's inputs and parameters, so that
// "linear: input reshape(max_pool2d(relu(conv2d(..., conv2.w, conv2.b)))) ([32,1568])" says
// which layer it was. Leaves are always named; deeper op nodes become "...".
std::string expression(const Graph& g, int id, int depth) {
  const Node& n = g.node(id);
  if (n.kind != NodeKind::kOp) return n.name;
  if (depth == 0) return "...";
  std::string s = n.name + "(";
  for (std::size_t i = 0; i < n.inputs.size(); ++i) {
    if (i) s += ", ";
    s += expression(g, n.inputs[i], depth - 1);
  }
  return s + ")";
}

}  // namespace

Value::Value(Graph* graph, int id) : graph_(graph ? graph->self() : nullptr), id_(id) {}

Graph& Value::graph() const {
  if (!valid()) throw Error("use of an invalid (default-constructed) Value");
  return **graph_;
}
Shape Value::shape() const { return graph().node(id_).shape; }
DType Value::dtype() const { return graph().node(id_).dtype; }
const std::string& Value::name() const { return graph().node(id_).name; }

std::string Value::describe() const {
  if (!valid()) return "<invalid value>";
  const Graph& g = graph();
  const Node& n = g.node(id_);
  return expression(g, id_, 4) + " (" + n.shape.str() +
         (n.dtype == g.dtype() ? "" : std::string(" ") + dtype_name(n.dtype)) + ")";
}

Graph::Graph(DType dtype) : self_(std::make_unique<Graph*>(this)), dtype_(dtype) {
  if (dtype == DType::kI32) throw Error("Graph: the default dtype must be f32 or f64");
}

Graph::Graph(Graph&& other) noexcept
    : self_(std::move(other.self_)),
      dtype_(other.dtype_),
      nodes_(std::move(other.nodes_)),
      params_(std::move(other.params_)),
      inputs_(std::move(other.inputs_)) {
  *self_ = this;
  other.nodes_.clear();
  other.params_.clear();
  other.inputs_.clear();
}

Graph::~Graph() = default;

Graph* const* Graph::self() const {
  // A moved-from graph gets a new cell when it is used again.
  if (!self_) self_ = std::make_unique<Graph*>(const_cast<Graph*>(this));
  return self_.get();
}

Value Graph::add_node(Node node) {
  nodes_.push_back(std::move(node));
  return Value(this, static_cast<int>(nodes_.size()) - 1);
}

Value Graph::input(std::string name, Shape shape) { return input(std::move(name), shape, dtype_); }

Value Graph::input(std::string name, Shape shape, DType dtype) {
  Node n;
  n.kind = dtype == DType::kI32 ? NodeKind::kLabels : NodeKind::kInput;
  n.shape = shape;
  n.dtype = dtype;
  n.name = std::move(name);
  Value v = add_node(std::move(n));
  inputs_.push_back(v);
  return v;
}

Value Graph::input_labels(std::string name, Shape shape) {
  return input(std::move(name), shape, DType::kI32);
}

Value Graph::param(std::string name, Shape shape) {
  return param(std::move(name), Tensor(shape, dtype_));
}

Value Graph::param(std::string name, const Tensor& storage) {
  if (storage.dtype() == DType::kI32) {
    throw Error("param " + name + ": parameters must be floating point");
  }
  if (!storage.defined()) {
    throw Error("param " + name + ": the storage tensor has no data (a default-constructed Tensor)");
  }
  Node n;
  n.kind = NodeKind::kParam;
  n.shape = storage.shape();
  n.dtype = storage.dtype();
  n.name = std::move(name);
  n.value = storage;
  Value v = add_node(std::move(n));
  params_.push_back(v);
  return v;
}

Value Graph::constant(const Tensor& value, std::string name) {
  if (!value.defined()) {
    throw Error("constant " + name + ": the tensor has no data (a default-constructed Tensor)");
  }
  Node n;
  n.kind = NodeKind::kConstant;
  n.shape = value.shape();
  n.dtype = value.dtype();
  n.name = std::move(name);
  n.value = value;
  return add_node(std::move(n));
}

Value Graph::scalar(double v) {
  Tensor t(Shape{}, dtype_);
  t.set(0, v);
  return constant(t, "scalar");
}

Value Graph::find(std::string_view name) const {
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].kind != NodeKind::kOp && nodes_[i].name == name) {
      return Value(const_cast<Graph*>(this), static_cast<int>(i));
    }
  }
  return {};
}

void Graph::check_owned(Value v, std::string_view who) const {
  if (!v.valid()) throw Error(std::string(who) + ": invalid (default-constructed) Value");
  if (&v.graph() != this) throw Error(std::string(who) + ": value belongs to another graph");
}

const Node& Graph::node(Value v) const {
  check_owned(v, "Graph::node");
  return node(v.id());
}

const Tensor& Graph::value(Value v) const {
  const Node& n = node(v);
  if (n.kind != NodeKind::kParam && n.kind != NodeKind::kConstant) {
    throw Error("Graph::value: " + v.describe() + " is not a parameter or constant");
  }
  return n.value;
}

Value Graph::add_op(std::shared_ptr<const Op> op, std::span<const Value> inputs, Shape shape,
                    DType dtype) {
  Node n;
  n.kind = NodeKind::kOp;
  n.name = op->name();
  for (const Value& v : inputs) {
    check_owned(v, op->name());
    n.inputs.push_back(v.id());
  }
  n.op = std::move(op);
  n.shape = shape;
  n.dtype = dtype;
  return add_node(std::move(n));
}

}  // namespace tbgrad
