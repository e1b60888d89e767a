// The op table's cases (tests/op_cases.hpp) of layer_norm, group_norm and their gradient kernels
// (ops/norm.hpp), against torch.nn.functional.layer_norm and group_norm. Each row gives the
// input's shape, the normalized rank (layer_norm) or the groups (group_norm), which of weight and
// bias there are, and eps; the gradient kernels' cases are d/dx of every row and d/dweight,
// d/dbias of the rows that have them. Bits across thread counts, the layers and the shape errors
// are tested in tests/test_norm.cpp and tests/test_shape_errors.cpp.
//
// A row of one or two values has d/dx exactly 0 (and y = bias for one), which PyTorch's float32
// kernels miss by their rounding times 1 / sqrt(eps): such rows use eps 1e-2, so that torch's
// error stays within the comparison's tolerance. PyTorch 1.13's group_norm fails for a bias
// without a weight ("shape '[0]' is invalid"): its expression passes a weight of ones instead,
// the same function.
#include <cstdint>
#include <string>
#include <vector>

#include "op_case_util.hpp"

namespace tbgrad::testing::cases {
namespace {

struct NormRow {
  Shape x;
  std::int64_t param;  // layer_norm: the normalized rank; group_norm: the groups
  bool weight, bias;
  double eps;
  double lo, hi;  // x's range: off zero, so that the mean is not ~0
};

const NormRow kLayerRows[] = {
    {{4, 5}, 1, true, true, 1e-5, -1, 3},          // [N, D]
    {{3, 4, 5}, 2, true, true, 1e-5, -1, 2},       // normalized shape of two axes
    {{2, 3, 4, 5}, 3, true, true, 1e-5, 0, 2},     // of three
    {{3, 4, 5}, 1, true, true, 1e-3, -1, 1},       // the last axis of [N, L, D]; other eps
    {{3, 7}, 1, false, false, 1e-5, -2, 1},        // no weight, no bias
    {{2, 3, 9}, 1, true, false, 1e-5, -1, 1},      // weight only; 9 = a lane block and a tail
    {{2, 3, 5}, 2, false, true, 1e-5, -1, 1},      // bias only
    {{5, 1}, 1, true, true, 1e-2, -1, 1},          // one value per row: y = bias (eps: below)
    {{4, 1, 3}, 2, true, true, 1e-2, -1, 1},       // a size-1 axis in the normalized shape
    {{1, 6}, 1, true, true, 1e-5, -1, 1},          // one example
    {{6}, 1, true, true, 1e-5, -1, 2},             // the whole of x (batch-wide)
    {{2, 3}, 2, true, true, 1e-5, -1, 2},          // the whole of x, two axes
    {{32, 2048}, 1, true, true, 1e-5, -1, 2},      // 65,536 values: the kernels' parallel paths
};

const NormRow kGroupRows[] = {
    {{4, 6}, 3, true, true, 1e-5, -1, 3},          // [N, C]: groups of two channels of one value
    {{4, 6}, 1, true, true, 1e-5, -1, 1},          // groups 1
    {{4, 6}, 6, true, true, 1e-2, -1, 1},          // groups C: one value per group
    {{3, 4, 7}, 2, true, true, 1e-5, 0, 2},        // [N, C, L]
    {{2, 6, 4, 5}, 3, true, true, 1e-5, -1, 2},    // [N, C, H, W]
    {{2, 6, 4, 5}, 1, false, false, 1e-5, -1, 1},  // no weight, no bias
    {{2, 6, 4, 5}, 6, true, true, 1e-3, -1, 1},    // groups C; other eps
    {{1, 4, 3, 3}, 2, true, false, 1e-5, -1, 1},   // one example; weight only
    {{3, 4, 3}, 4, false, true, 1e-5, -1, 1},      // bias only
    {{3, 4, 1, 1}, 2, true, true, 1e-2, -1, 1},    // 1x1 images: two values per group
    {{2, 3, 1, 5}, 3, true, true, 1e-2, -3, 1},    // a size-1 axis
    {{2, 5, 3}, 5, true, true, 1e-5, -1, 1},       // odd sizes
    {{8, 16, 20, 20}, 4, true, true, 1e-5, -1, 2},  // 51,200 values: the parallel paths
};

// Names without dots or minus signs.
std::string id_safe(std::string s) {
  for (char& ch : s) {
    if (ch == '.') ch = 'p';
    if (ch == '-') ch = 'm';
    if (ch == '+') ch = 'p';
  }
  return s;
}

std::string row_name(const NormRow& r, const char* param) {
  return id_safe(shape_name(r.x) + "_" + param + str(r.param) + (r.weight ? "_w" : "") +
                 (r.bias ? "_b" : "") + "_e" + py_float(r.eps));
}

Shape normalized_shape(const NormRow& r) {
  std::vector<std::int64_t> dims;
  for (int i = r.x.rank() - static_cast<int>(r.param); i < r.x.rank(); ++i) dims.push_back(r.x[i]);
  return Shape(std::span<const std::int64_t>(dims));
}

// The forward op of a row (layer_norm or group_norm) in PyTorch and in tbgrad.
struct Family {
  const char* op;     // "layer_norm"
  const char* param;  // in case names: "k", "g"
  Shape (*affine)(const NormRow&);
  std::string (*torch)(const NormRow&, const std::string& x, const std::string& w,
                       const std::string& b);
  Value (*build)(const NormRow&, Value x, Value w, Value b);
  // The gradient kernels.
  Value (*input)(const NormRow&, Value x, Value w, Value grad);
  Value (*weight)(const NormRow&, Value x, Value grad);
  Value (*bias)(const NormRow&, Value grad);
};

const Family kLayer = {
    "layer_norm",
    "k",
    [](const NormRow& r) { return normalized_shape(r); },
    [](const NormRow& r, const std::string& x, const std::string& w, const std::string& b) {
      return "F.layer_norm(" + x + ", " + py_shape(normalized_shape(r)) + ", " + w + ", " + b +
             ", eps=" + py_float(r.eps) + ")";
    },
    [](const NormRow& r, Value x, Value w, Value b) {
      return layer_norm(x, static_cast<int>(r.param), w, b, {.eps = r.eps});
    },
    [](const NormRow& r, Value x, Value w, Value grad) {
      return layer_norm_backward_input(x, static_cast<int>(r.param), w, grad, {.eps = r.eps});
    },
    [](const NormRow& r, Value x, Value grad) {
      return layer_norm_backward_weight(x, static_cast<int>(r.param), grad, {.eps = r.eps});
    },
    [](const NormRow& r, Value grad) {
      return layer_norm_backward_bias(grad, static_cast<int>(r.param));
    },
};

const Family kGroup = {
    "group_norm",
    "g",
    [](const NormRow& r) { return Shape{r.x[1]}; },
    [](const NormRow& r, const std::string& x, const std::string& w, const std::string& b) {
      const std::string weight = w == "None" && b != "None" ? "torch.ones_like(" + b + ")" : w;
      return "F.group_norm(" + x + ", " + str(r.param) + ", " + weight + ", " + b +
             ", eps=" + py_float(r.eps) + ")";
    },
    [](const NormRow& r, Value x, Value w, Value b) {
      return group_norm(x, r.param, w, b, {.eps = r.eps});
    },
    [](const NormRow& r, Value x, Value w, Value grad) {
      return group_norm_backward_input(x, r.param, w, grad, {.eps = r.eps});
    },
    [](const NormRow& r, Value x, Value grad) {
      return group_norm_backward_weight(x, r.param, grad, {.eps = r.eps});
    },
    [](const NormRow&, Value grad) { return group_norm_backward_bias(grad); },
};

void add_rows(Table& t, const Family& f, std::span<const NormRow> rows) {
  const std::string op = f.op;
  for (const NormRow& r : rows) {
    const std::string name = row_name(r, f.param);
    const Shape as = f.affine(r);
    const CaseInput x = uniform("x", r.x, r.lo, r.hi);
    const CaseInput w = uniform("w", as, 0.5, 1.5);
    const CaseInput b = uniform("b", as);
    const CaseInput gy = uniform("gy", r.x);
    const bool hw = r.weight, hb = r.bias;

    std::vector<CaseInput> ins{x};
    if (hw) ins.push_back(w);
    if (hb) ins.push_back(b);
    t.push_back({.op = op,
                 .name = name,
                 .inputs = ins,
                 .build = [&f, r, hw, hb](Graph&, Inputs in) {
                   return f.build(r, in[0], hw ? in[1] : Value(),
                                  hb ? in[hw ? 2 : 1] : Value());
                 },
                 .torch = f.torch(r, "x", hw ? "w" : "None", hb ? "b" : "None")});

    // d/dx of sum(op(x, w) * gy): the bias does not change it.
    std::vector<CaseInput> gin{x};
    if (hw) gin.push_back(w);
    gin.push_back(gy);
    t.push_back({.op = op + "_backward_input",
                 .name = name,
                 .inputs = gin,
                 .build = [&f, r, hw](Graph&, Inputs in) {
                   return f.input(r, in[0], hw ? in[1] : Value(), in.back());
                 },
                 .torch = "vjp(lambda z: " + f.torch(r, "z", hw ? "w" : "None", "None") +
                          ", x, gy)",
                 .gradient_of = [&f, r, hw](Graph&, Inputs in) {
                   return f.build(r, in[0], hw ? in[1] : Value(), Value());
                 }});
    if (hw) {
      t.push_back({.op = op + "_backward_weight",
                   .name = name,
                   .inputs = {w, x, gy},  // w first: the kernel's result is its gradient
                   .build = [&f, r](Graph&, Inputs in) { return f.weight(r, in[1], in[2]); },
                   .torch = "vjp(lambda v: " + f.torch(r, "x", "v", "None") + ", w, gy)",
                   .gradient_of = [&f, r](Graph&, Inputs in) {
                     return f.build(r, in[1], in[0], Value());
                   }});
    }
    if (hb) {
      t.push_back({.op = op + "_backward_bias",
                   .name = name,
                   .inputs = {b, x, gy},  // b first: the kernel's result is its gradient
                   .build = [&f, r](Graph&, Inputs in) { return f.bias(r, in[2]); },
                   .torch = "vjp(lambda v: " + f.torch(r, "x", "None", "v") + ", b, gy)",
                   .gradient_of = [&f, r](Graph&, Inputs in) {
                     return f.build(r, in[1], Value(), in[0]);
                   }});
    }
  }
}

}  // namespace

void add_norm_cases(Table& t) {
  add_rows(t, kLayer, kLayerRows);
  add_rows(t, kGroup, kGroupRows);
}

}  // namespace tbgrad::testing::cases
