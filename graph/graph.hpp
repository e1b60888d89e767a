// The computation graph: an append-only list of nodes, each a leaf (input, labels, parameter,
// constant) or an op applied to earlier nodes. Creation order is therefore a valid schedule.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tbgrad/graph/tensor.hpp"

namespace tbgrad {

class Graph;
class Op;

// The handle users hold: a node of a graph. Cheap to copy; valid while its graph lives, also
// after the graph is moved (it refers to the graph through a cell the graph updates on a move).
class Value {
 public:
  Value() = default;
  Value(Graph* graph, int id);

  bool valid() const { return graph_ != nullptr && *graph_ != nullptr; }
  Graph& graph() const;
  int id() const { return id_; }
  // By value: a reference into the graph would dangle once an op appends a node.
  Shape shape() const;
  DType dtype() const;
  const std::string& name() const;
  // "x ([32,1,28,28])": how error messages name a value.
  std::string describe() const;

  friend bool operator==(const Value& a, const Value& b) {
    return a.graph_ == b.graph_ && a.id_ == b.id_;
  }

 private:
  Graph* const* graph_ = nullptr;  // the graph's self cell
  int id_ = -1;
};

enum class NodeKind : std::uint8_t { kInput, kLabels, kParam, kConstant, kOp };

struct Node {
  NodeKind kind = NodeKind::kOp;
  std::shared_ptr<const Op> op;  // set for kOp
  std::vector<int> inputs;       // ids of earlier nodes
  Shape shape;
  DType dtype = DType::kF32;
  std::string name;
  Tensor value;  // storage of a parameter or constant
};

class Graph {
 public:
  // `dtype` is the floating type of inputs and parameters created without an explicit one:
  // f32 for training, f64 for gradient checks.
  explicit Graph(DType dtype = DType::kF32);
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  // Movable, so a function can build a graph and return it with its Values: they follow the
  // graph to its new place. A moved-from graph is empty, and Values made before the move refer to
  // the moved-to one.
  Graph(Graph&& other) noexcept;
  Graph& operator=(Graph&&) = delete;
  ~Graph();

  DType dtype() const { return dtype_; }

  Value input(std::string name, Shape shape);
  Value input(std::string name, Shape shape, DType dtype);
  Value input_labels(std::string name, Shape shape);  // int32 class indices
  // A trainable tensor, zero-initialised; set its values with value(p) or an initializer.
  Value param(std::string name, Shape shape);
  // A parameter sharing storage with `storage`, so graphs of different batch sizes can share
  // one set of weights.
  Value param(std::string name, const Tensor& storage);
  Value constant(const Tensor& value, std::string name = "const");
  Value scalar(double v);  // a rank-0 constant of the graph's dtype

  const std::vector<Value>& params() const { return params_; }
  const std::vector<Value>& inputs() const { return inputs_; }
  Value find(std::string_view name) const;  // invalid Value if no node has that name

  // Storage of a parameter or constant.
  const Tensor& value(Value v) const;

  int size() const { return static_cast<int>(nodes_.size()); }
  const Node& node(int id) const { return nodes_[static_cast<std::size_t>(id)]; }
  const Node& node(Value v) const;

  // Used by op constructors after their shape rule passed.
  Value add_op(std::shared_ptr<const Op> op, std::span<const Value> inputs, Shape shape,
               DType dtype);

 private:
  Value add_node(Node node);
  void check_owned(Value v, std::string_view who) const;

  friend class Value;
  Graph* const* self() const;

  // Where Values find this graph: a heap cell holding `this`, handed on by a move.
  mutable std::unique_ptr<Graph*> self_;
  DType dtype_;
  std::vector<Node> nodes_;
  std::vector<Value> params_;
  std::vector<Value> inputs_;
};

}  // namespace tbgrad
