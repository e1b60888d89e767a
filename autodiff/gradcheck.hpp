// Numerical check of analytic gradients, in the spirit of torch.autograd.gradcheck.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/graph/tensor.hpp"

namespace tbgrad {

struct GradcheckOptions {
  double eps = 1e-6;   // central-difference step
  double atol = 1e-5;  // pass if |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-3;
  // Check at most this many elements per input (spread evenly); 0 checks all of them.
  std::int64_t max_elements_per_input = 0;
  std::uint64_t seed = 0;  // for the random projection of non-scalar outputs
};

struct GradcheckInputResult {
  std::string name;
  Shape shape;
  std::int64_t checked = 0;        // elements compared
  std::int64_t worst_index = -1;   // flat index of the largest violation (or error)
  double analytic = 0, numeric = 0;
  double max_abs_error = 0;
  double max_ratio = 0;  // max over elements of |a - n| / (atol + rtol * |n|); <= 1 passes
  bool ok = true;
};

struct GradcheckResult {
  bool ok = true;
  bool reentrant = true;  // running backward twice gave bit-identical gradients
  std::vector<GradcheckInputResult> inputs;
  std::string report() const;  // one line per input, worst element first
};

// Compares d out / d w for every w in `wrt` (parameters or floating inputs of a float64 graph)
// with central finite differences. `feeds` binds every input the output needs. A non-scalar
// `out` is reduced to sum(out * R) with a fixed random R, which checks the full Jacobian's
// action. Parameter values are restored afterwards.
GradcheckResult gradcheck(Value out, std::span<const Value> wrt,
                          std::span<const std::pair<Value, Tensor>> feeds = {},
                          const GradcheckOptions& options = {});
GradcheckResult gradcheck(Value out, std::initializer_list<Value> wrt,
                          std::initializer_list<std::pair<Value, Tensor>> feeds = {},
                          const GradcheckOptions& options = {});

}  // namespace tbgrad
