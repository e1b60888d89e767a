// The op table's cases (tests/op_cases.hpp) of batch_norm, its gradient kernels and dropout.
//
// The table's runs use an Executor's default run info (Note [Run info] in graph/op.hpp):
// training mode, step 0, seed 0, first example 0. So batch_norm normalises with the batch's
// statistics (the running statistics are inputs it updates in place; PyTorch gets copies, so
// that its update does not touch a tensor that requires grad), and dropout drops. Evaluation
// mode, the running statistics' update and dropout's masks across threads and micro-batches are
// tested in tests/test_batch_norm.cpp.
//
// Dropout's PyTorch expression recomputes tbgrad's mask in Python (SplitMix64 of (seed, step,
// stream, element index): ops/dropout.hpp): torch's own generator draws other masks. A case's
// stream is given explicitly, so the expression knows it.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "op_case_util.hpp"

namespace tbgrad::testing::cases {
namespace {

struct BnRow {
  Shape x;
  double momentum, eps;
  double lo, hi;  // x's range: off zero, so the batch's mean is not ~0
};

const BnRow kBnRows[] = {
    {{4, 3}, 0.1, 1e-5, -1, 3},            // [N, C]
    {{2, 1}, 0.1, 1e-5, -2, 2},            // two values per channel, the fewest training allows
    {{7, 5}, 0.3, 1e-3, -1, 1},            // odd sizes, other momentum and eps
    {{3, 4, 7}, 0.1, 1e-5, 0, 2},          // [N, C, L]
    {{2, 3, 4, 5}, 0.1, 1e-5, -1, 2},      // [N, C, H, W]
    {{1, 2, 3, 3}, 0.1, 1e-5, -1, 1},      // one example: statistics over H and W
    {{5, 1, 1, 1}, 0.0, 1e-5, -1, 1},      // one channel of 1x1 images; momentum 0
    {{3, 5, 1, 7}, 1.0, 1e-2, -3, 1},      // a size-1 axis; momentum 1
    {{16, 8, 20, 20}, 0.1, 1e-5, -1, 2},   // 51,200 values: the kernels' parallel paths
    {{6, 4, 5, 3}, 0.1, 1e-5, 10, 12},     // a mean 19x the spread: the one-pass variance
};

std::string bn_name(const BnRow& r) {
  return shape_name(r.x) + "_m" + py_float(r.momentum) + "_e" + py_float(r.eps);
}

// torch's F.batch_norm in training mode, on copies of the running statistics.
std::string torch_bn(const std::string& x, const std::string& gamma, const std::string& beta,
                     const BatchNormOptions& o) {
  return "F.batch_norm(" + x + ", rm.detach().clone(), rv.detach().clone(), " + gamma + ", " +
         beta + ", training=True, momentum=" + py_float(o.momentum) + ", eps=" + py_float(o.eps) +
         ")";
}

// Names without dots or minus signs: "2x3x4x5_m0p1_e1em05".
std::string id_safe(std::string s) {
  for (char& ch : s) {
    if (ch == '.') ch = 'p';
    if (ch == '-') ch = 'm';
    if (ch == '+') ch = 'p';
  }
  return s;
}

void add_bn_rows(Table& t) {
  for (const BnRow& r : kBnRows) {
    const BatchNormOptions o{.momentum = r.momentum, .eps = r.eps};
    const Shape cs{r.x[1]};
    const std::string name = id_safe(bn_name(r));
    const CaseInput x = uniform("x", r.x, r.lo, r.hi);
    const CaseInput gamma = uniform("gamma", cs, 0.5, 1.5);
    const CaseInput beta = uniform("beta", cs);
    const CaseInput rm = uniform("rm", cs);
    const CaseInput rv = uniform("rv", cs, 0.5, 1.5);
    const CaseInput gy = uniform("gy", r.x);
    t.push_back({.op = "batch_norm",
                 .name = name,
                 .inputs = {x, gamma, beta, rm, rv},
                 .build = [o](Graph&, Inputs in) {
                   return batch_norm(in[0], in[1], in[2], in[3], in[4], o);
                 },
                 .torch = torch_bn("x", "gamma", "beta", o)});
    // The gradient kernels: d/d inputs[0] of sum(batch_norm(...) * gy).
    t.push_back(
        {.op = "batch_norm_backward_input",
         .name = name,
         .inputs = {x, gamma, rm, rv, gy},
         .build = [o](Graph&, Inputs in) {
           return batch_norm_backward_input(in[0], in[1], in[2], in[3], in[4], o);
         },
         .torch = "vjp(lambda z: " + torch_bn("z", "gamma", "None", o) + ", x, gy)",
         .gradient_of = [o, cs](Graph& g, Inputs in) {
           return batch_norm(in[0], in[1], g.constant(Tensor(cs, in[0].dtype()), "beta"), in[2],
                             in[3], o);
         }});
    t.push_back(
        {.op = "batch_norm_backward_weight",
         .name = name,
         .inputs = {gamma, x, rm, rv, gy},  // gamma first: the kernel's result is its gradient
         .build = [o](Graph&, Inputs in) {
           return batch_norm_backward_weight(in[1], in[2], in[3], in[4], o);
         },
         .torch = "vjp(lambda v: " + torch_bn("x", "v", "None", o) + ", gamma, gy)",
         .gradient_of = [o, cs](Graph& g, Inputs in) {
           return batch_norm(in[1], in[0], g.constant(Tensor(cs, in[0].dtype()), "beta"), in[2],
                             in[3], o);
         }});
    t.push_back(
        {.op = "batch_norm_backward_bias",
         .name = name,
         .inputs = {beta, x, gy},  // beta first: the kernel's result is its gradient
         .build = [](Graph&, Inputs in) { return batch_norm_backward_bias(in[2]); },
         .torch = "gy.transpose(0, 1).reshape(gy.shape[1], -1).sum(1)",
         .gradient_of = [o, cs](Graph& g, Inputs in) {
           Tensor ones(cs, in[0].dtype());
           ones.fill(1.0);
           return batch_norm(in[1], g.constant(ones, "gamma"), in[0],
                             g.constant(Tensor(cs, in[0].dtype()), "rm"),
                             g.constant(ones.clone(), "rv"), o);
         }});
  }
}

// SplitMix64 as one Python expression (ops/dropout.cpp's mix64).
const char* const kPyMix =
    "(lambda z: (z := (z + 0x9E3779B97F4A7C15) & M, "
    "z := ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M, "
    "z := ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M, z ^ (z >> 31))[-1])";

// torch's x * mask * scale with tbgrad's mask at seed 0, step 0, first example 0.
std::string torch_dropout(double p, std::uint64_t stream) {
  const std::string mix = kPyMix;
  const std::string keys =
      "(lambda M: (lambda mix: (lambda key: [((mix((key + i * 0x9E3779B97F4A7C15) & M) >> 11) * "
      "2.0**-53 >= " +
      py_float(p) + ") for i in range(x.numel())])(mix(mix(mix(0) ^ 0) ^ " +
      std::to_string(stream) + ")))(" + mix + "))((1 << 64) - 1)";
  const std::string scale = p >= 1.0 ? "0.0" : py_float(1.0 / (1.0 - p));
  return "x * (torch.tensor(" + keys + ", dtype=x.dtype).reshape(x.shape) * " + scale + ")";
}

void add_dropout_rows(Table& t) {
  const std::pair<Shape, double> rows[] = {
      {{4, 5}, 0.5},        {{3, 2, 4, 5}, 0.2}, {{7}, 0.9},    {{1, 1}, 0.5},
      {{2, 3}, 0.0},        {{2, 3}, 1.0},       {{200, 300}, 0.3},  // parallel path
  };
  std::uint64_t stream = 1;
  for (const auto& [shape, p] : rows) {
    const std::uint64_t s = stream++;
    const double prob = p;
    t.push_back({.op = "dropout",
                 .name = shape_name(shape) + "_p" + id_safe(py_float(p)),
                 .inputs = {uniform("x", shape)},
                 .build = [prob, s](Graph&, Inputs in) { return dropout(in[0], prob, s); },
                 .torch = torch_dropout(p, s)});
  }
}

}  // namespace

void add_bn_cases(Table& t) {
  add_bn_rows(t);
  add_dropout_rows(t);
}

}  // namespace tbgrad::testing::cases
