// The op test cases: one table, with rows for every op the library registers (PyTorch's OpInfo,
// shared/STYLE.md). Three tests read it: the forward test (tests/test_ops_forward.cpp: nested-loop
// references, float64 and float32), the gradcheck (tests/test_ops_gradcheck.cpp: finite
// differences for every case whose op has a VJP, the numeric VJP of the forward op for a gradient
// kernel without one) and the PyTorch comparison (tests/test_ops_torch.cpp with
// tests/torch_reference.py: values and gradients against torch's). Adding an op means adding its
// rows in its family's file (tests/op_case_util.hpp lists the files); AllRegisteredOps
// (test_ops_gradcheck.cpp) fails for a registered op without a case.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <span>
#include <string>
#include <tbgrad.hpp>
#include <variant>
#include <vector>

namespace tbgrad::testing {

// How a case's input is filled: random numbers from a seed fixed per case (make_inputs).
enum class InputKind {
  kUniform,       // uniform in [lo, hi)
  kAwayFromZero,  // |v| uniform in [0.1, 1), random sign: no value near relu's kink at 0
  kDistinct,      // a permutation of (i - n/2) * 0.01: every max-pooling window has one maximum
  kLabels,        // int32 class indices, uniform in [0, classes)
};

struct CaseInput {
  std::string name{};  // the graph input's name; a Python identifier in the PyTorch expression
  Shape shape{};
  InputKind kind = InputKind::kUniform;
  double lo = -1.0, hi = 1.0;  // kUniform
  int classes = 0;             // kLabels

  bool is_float() const { return kind != InputKind::kLabels; }
};

// Applies the op to the case's inputs (graph inputs, in the order of OpCase::inputs).
using Builder = std::function<Value(Graph&, std::span<const Value> inputs)>;

// The attributes of a case's op, for the forward test's nested-loop references.
using OpOptions = std::variant<std::monostate, Conv2dOptions, Pool2dOptions, MatmulOptions>;

struct OpCase {
  std::string op{};    // the registered op it exercises (OpInfo::name)
  std::string name{};  // what is special about it, unique for the op: "n1_c2_in7x7_..._nobias"
  std::vector<CaseInput> inputs{};
  Builder build{};  // through the public function users call: tbgrad::conv2d(x, w, b, options)
  // The same op in PyTorch, a Python expression over the inputs' names, evaluated by
  // tests/torch_reference.py with `torch`, `F` (torch.nn.functional) and `vjp` in scope. For a
  // gradient kernel, PyTorch's gradient of the forward op: vjp(fn, primal, cotangent) is
  // d/d primal of sum(fn(primal) * cotangent), at zeros when primal is a shape.
  std::string torch{};
  OpOptions options{};
  // Set for a gradient kernel without a VJP: the forward op whose gradient it computes. The
  // case's value is then d/d inputs[0] of sum(gradient_of(inputs) * inputs.back()), which the
  // gradcheck compares with central differences.
  Builder gradient_of{};

  // "<op>_<name>", unique in the table: the test names.
  std::string id() const { return op + "_" + name; }
};

// Every case, grouped by op.
const std::vector<OpCase>& op_cases();

// Test parameters print as the case's id, not as an address.
inline void PrintTo(const OpCase* c, std::ostream* os) {
  *os << c->id();
}

// Whether the registered op `op` has a VJP (false for an op that is not registered).
bool op_has_vjp(const std::string& op);

// The case's input values in `dtype` (labels are int32 whatever it is), from a seed that is a hash
// of the case's id: the same on every run, different for every case. The float32 values are the
// float64 ones rounded.
std::vector<Tensor> make_inputs(const OpCase& c, DType dtype);
// Uniform numbers in [-1, 1) of `shape` and `dtype` from `seed`: the R of sum(out * R).
Tensor random_tensor(const Shape& shape, DType dtype, std::uint64_t seed);
// The case's seed (a hash of its id), for draws of the tests' own.
std::uint64_t case_seed(const OpCase& c);

// The case built in a fresh graph of `dtype`: its inputs (g.input, g.input_labels) and output.
struct CaseGraph {
  Graph graph;
  std::vector<Value> inputs;
  Value out;
};
CaseGraph build_case(const OpCase& c, DType dtype);

}  // namespace tbgrad::testing
