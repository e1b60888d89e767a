#include "graph/op.hpp"

namespace tbgrad {

std::vector<Value> Op::vjp(std::span<const Value>, Value, Value) const {
  throw Error(std::string(name()) +
              " has no vector-Jacobian product: it cannot be differentiated (it is itself a "
              "gradient kernel; higher-order gradients through it are not supported)");
}

static std::vector<OpInfo>& op_registry() {
  static std::vector<OpInfo> ops;
  return ops;
}

const std::vector<OpInfo>& registered_ops() { return op_registry(); }

bool register_op(std::string name, bool has_vjp) {
  op_registry().push_back({std::move(name), has_vjp});
  return true;
}

void shape_error(const char* op, const std::string& message) {
  throw ShapeError(std::string(op) + ": " + message);
}

}  // namespace tbgrad
