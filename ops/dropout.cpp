#include "ops/dropout.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "graph/parallel.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

constexpr std::int64_t kGrain = 16384;
constexpr std::uint64_t kGamma = 0x9E3779B97F4A7C15ULL;

// SplitMix64's output function (Steele, Lea and Flood 2014): z advanced by the golden gamma,
// then mixed.
constexpr std::uint64_t mix64(std::uint64_t z) {
  z += kGamma;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class DropoutOp final : public Op {
 public:
  DropoutOp(double p, std::uint64_t stream) : p_(p), stream_(stream) {}
  static constexpr OpTraits kKinds[] = {{.name = "dropout"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape& out) const override {
    return {12.0 * static_cast<double>(out.numel()), "12 numel(x): a hash and a product"};
  }
  void forward(const KernelContext& ctx) const override {
    const RunInfo& run = ctx.run_info();
    const Shape& shape = ctx.inputs[0].shape();
    const std::int64_t n = ctx.output.numel();
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      if (!run.training || p_ == 0.0) {
        parallel_for(n, kGrain, [&](std::int64_t lo, std::int64_t hi) {
          std::copy(x + lo, x + hi, y + lo);
        });
        return;
      }
      // The element's index in the whole batch: the graph's examples are the batch's from
      // first_example on.
      std::int64_t examples = run.examples > 0 && n % run.examples == 0 ? run.examples
                              : shape.rank() > 0                          ? shape[0]
                                                                          : 1;
      const std::int64_t per_example = examples > 0 ? n / examples : 0;
      const auto first = static_cast<std::uint64_t>(run.first_example * per_example);
      const std::uint64_t key = mix64(mix64(mix64(run.seed) ^ run.step) ^ stream_);
      const T scale = p_ >= 1.0 ? T(0) : static_cast<T>(1.0 / (1.0 - p_));
      const double p = p_;
      parallel_for(n, kGrain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const std::uint64_t h = mix64(key + (first + static_cast<std::uint64_t>(i)) * kGamma);
          const bool keep = static_cast<double>(h >> 11) * 0x1.0p-53 >= p;
          y[i] = x[i] * (keep ? scale : T(0));
        }
      });
    });
  }
  std::vector<Value> vjp(std::span<const Value>, Value, Value g) const override {
    return {dropout(g, p_, stream_)};
  }

 private:
  double p_;
  std::uint64_t stream_;
};
TBGRAD_REGISTER_OPS(DropoutOp);

}  // namespace

Value dropout(Value x, double p, std::uint64_t stream) {
  if (!x.valid()) shape_error("dropout", "input is an invalid (empty) Value");
  detail::require_float("dropout", x);
  if (!(p >= 0.0 && p <= 1.0)) {
    shape_error("dropout", "probability p must be in [0, 1], got " + std::to_string(p) +
                               " for " + x.describe());
  }
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<DropoutOp>(p, stream), ins, x.shape(), x.dtype());
}

Value dropout(Value x, double p) {
  if (!x.valid()) shape_error("dropout", "input is an invalid (empty) Value");
  return dropout(x, p, static_cast<std::uint64_t>(x.graph().size()));
}

}  // namespace tbgrad
