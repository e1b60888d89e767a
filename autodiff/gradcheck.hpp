// Numerical check of analytic gradients, in the spirit of torch.autograd.gradcheck.
#pragma once

#include <concepts>
#include <cstdint>
#include <initializer_list>
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

// gradcheck's list arguments: a std::vector (g.params()), a std::span, an array or a braced
// list ({w, b}; {{x, x_values}, {y, y_values}}), so that every mix of them compiles. It holds
// copies of the handles (a Value or a Tensor is a cheap handle, not the data).
namespace detail {
template <typename Range, typename T>
concept ContiguousOf = (std::constructible_from<std::span<const T>, const Range&>);
}  // namespace detail
template <typename T>
class GradcheckList {
 public:
  GradcheckList() = default;
  GradcheckList(std::initializer_list<T> items)  // NOLINT(google-explicit-constructor)
      : items_(items) {}
  template <detail::ContiguousOf<T> Range>
  GradcheckList(const Range& items) {  // NOLINT(google-explicit-constructor)
    const std::span<const T> s(items);
    items_.assign(s.begin(), s.end());
  }

  std::span<const T> items() const { return items_; }

 private:
  std::vector<T> items_;
};
using GradcheckValues = GradcheckList<Value>;
using GradcheckFeeds = GradcheckList<std::pair<Value, Tensor>>;

// Compares d out / d w for every w in `wrt` (parameters or floating inputs of a float64 graph)
// with central finite differences. `feeds` binds every input the output needs. A non-scalar
// `out` is reduced to sum(out * R) with a fixed random R, which checks the full Jacobian's
// action. Parameter values are restored afterwards.
//   gradcheck(loss, g.params(), {{x, x_values}});
//   gradcheck(loss, {w, b}, feeds, {.max_elements_per_input = 100});
GradcheckResult gradcheck(Value out, const GradcheckValues& wrt, const GradcheckFeeds& feeds = {},
                          const GradcheckOptions& options = {});
// Without feeds: gradcheck(loss, {w}, options). (Only a named or typed GradcheckOptions: a bare
// braced list there is taken as the feeds, so gradcheck(loss, {w}, {}) has one meaning.)
template <std::same_as<GradcheckOptions> Options>
GradcheckResult gradcheck(Value out, const GradcheckValues& wrt, const Options& options) {
  return gradcheck(out, wrt, GradcheckFeeds{}, options);
}

}  // namespace tbgrad
