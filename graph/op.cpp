#include "graph/op.hpp"

namespace tbgrad {

std::vector<Value> Op::vjp(std::span<const Value>, Value, Value) const {
  throw Error(std::string(name()) +
              " has no vector-Jacobian product: it cannot be differentiated (it is itself a "
              "gradient kernel; higher-order gradients through it are not supported)");
}

const OpTraits& Op::traits() const {
  static constexpr OpTraits kNone{};
  return kNone;
}

Value Op::apply_to(std::span<const Value>) const {
  return {};
}

OpCost Op::cost(std::span<const Shape>, const Shape& output) const {
  return {static_cast<double>(output.numel()), "numel(out)"};
}

static std::vector<OpInfo>& op_registry() {
  static std::vector<OpInfo> ops;
  return ops;
}

const std::vector<OpInfo>& registered_ops() { return op_registry(); }

bool register_op(const OpTraits& traits) {
  op_registry().push_back({traits.name, traits.has_vjp, traits});
  return true;
}

bool register_op(std::string name, bool has_vjp) {
  OpTraits t;
  t.has_vjp = has_vjp;
  op_registry().push_back({std::move(name), has_vjp, t});
  return true;
}

void shape_error(const char* op, const std::string& message) {
  throw ShapeError(std::string(op) + ": " + message);
}

}  // namespace tbgrad
