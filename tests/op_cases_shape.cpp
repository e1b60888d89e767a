// The op table's rows for reductions over axes (sum, mean, max, var), permute, concat, slice
// and pad (ops/reduce_axes.cpp, ops/layout.cpp).
//
// Where the gradient is a convention rather than a derivative, the inputs avoid it: max over
// axes splits the gradient between tied maxima (torch.amax's rule), which central differences
// cannot see, so its inputs are distinct (InputKind::kDistinct); MaxAxesBackward.SplitsTiesEvenly
// (tests/test_ops_gradcheck.cpp) tests the rule by hand.
#include <string>
#include <vector>

#include "op_case_util.hpp"

namespace tbgrad::testing::cases {
namespace {

// "(0, 2)": an axis list as a Python tuple.
std::string py_axes(const std::vector<int>& axes) {
  std::string s = "(";
  for (std::size_t i = 0; i < axes.size(); ++i) s += (i ? ", " : "") + str(axes[i]);
  return s + (axes.size() == 1 ? ",)" : ")");
}

// "0_m2": an axis list in a case name.
std::string axes_name(const std::vector<int>& axes) {
  std::string s;
  for (std::size_t i = 0; i < axes.size(); ++i) {
    s += (i ? "_" : "") + (axes[i] < 0 ? "m" + str(-axes[i]) : str(axes[i]));
  }
  return s;
}

// The shape of x reduced over the axes (kept as 1 with keepdims).
Shape reduced(const Shape& x, const std::vector<int>& axes, bool keepdims) {
  std::vector<bool> red(static_cast<std::size_t>(x.rank()), false);
  for (const int a : axes) red[static_cast<std::size_t>(a < 0 ? a + x.rank() : a)] = true;
  std::vector<std::int64_t> d;
  for (int i = 0; i < x.rank(); ++i) {
    if (!red[static_cast<std::size_t>(i)]) {
      d.push_back(x[i]);
    } else if (keepdims) {
      d.push_back(1);
    }
  }
  return Shape(std::span<const std::int64_t>(d));
}

struct ReduceRow {
  Shape x;
  std::vector<int> axes;
  bool keepdims;
};

const ReduceRow kReduceRows[] = {
    {{2, 3, 4}, {1}, false},          // a middle axis
    {{2, 3, 4}, {0, 2}, true},        // two axes around a kept one, kept as 1
    {{2, 3, 4}, {-1}, false},         // the last axis, negative
    {{2, 3, 4}, {-3, 1}, true},       // negative and positive
    {{5, 1, 7}, {1}, false},          // a size-1 axis
    {{3, 1, 5}, {0}, true},           // a leading axis with a size-1 one after it
    {{4, 3, 5, 6}, {0, 2, 3}, true},  // per-channel statistics of images, [1, C, 1, 1]
    {{4, 3, 5, 6}, {0, 2, 3}, false},  // ... as [C]
    {{2, 3, 4, 5}, {1, 3}, false},    // alternating reduced and kept axes
    {{7, 1}, {0}, false},             // a column
    {{64, 300}, {0}, false},          // a batch sum: the kept-inner path in parallel
    {{3, 1100}, {0}, true},           // rows longer than a block of the kept-inner path
    {{300, 70}, {1}, false},          // many results: the per-element path in parallel
    {{6, 5, 4, 3, 2}, {4, 1, 2}, true},  // rank 5
};

std::string reduce_name(const ReduceRow& r) {
  return shape_name(r.x) + "_axes" + axes_name(r.axes) + (r.keepdims ? "_keep" : "");
}

std::string kw(const ReduceRow& r) {
  return "dim=" + py_axes(r.axes) + ", keepdim=" + (r.keepdims ? "True" : "False");
}

void add_reduce_axes_cases(Table& t) {
  for (const ReduceRow& r : kReduceRows) {
    const std::vector<int> axes = r.axes;
    const bool kd = r.keepdims;
    t.push_back({.op = "sum_axes",
                 .name = reduce_name(r),
                 .inputs = {uniform("x", r.x)},
                 .build = [axes, kd](Graph&, Inputs in) { return sum(in[0], axes, kd); },
                 .torch = "torch.sum(x, " + kw(r) + ")"});
    t.push_back({.op = "mean_axes",
                 .name = reduce_name(r),
                 .inputs = {uniform("x", r.x)},
                 .build = [axes, kd](Graph&, Inputs in) { return mean(in[0], axes, kd); },
                 .torch = "torch.mean(x, " + kw(r) + ")"});
    t.push_back({.op = "max_axes",
                 .name = reduce_name(r),
                 .inputs = {distinct("x", r.x)},
                 .build = [axes, kd](Graph&, Inputs in) { return max(in[0], axes, kd); },
                 .torch = "torch.amax(x, " + kw(r) + ")"});
    t.push_back({.op = "max_axes_backward",
                 .name = reduce_name(r),
                 .inputs = {distinct("x", r.x), uniform("gy", reduced(r.x, r.axes, kd))},
                 .build =
                     [axes, kd](Graph&, Inputs in) {
                       return max_backward(in[0], max(in[0], axes, kd), in[1], axes, kd);
                     },
                 .torch = "vjp(lambda z: torch.amax(z, " + kw(r) + "), x, gy)",
                 .gradient_of = [axes, kd](Graph&, Inputs in) { return max(in[0], axes, kd); }});
    for (const int c : {0, 1, 2}) {
      if (reduced(r.x, {}, false).numel() / reduced(r.x, r.axes, false).numel() <= c) continue;
      t.push_back({.op = "var_axes",
                   .name = reduce_name(r) + "_correction" + str(c),
                   .inputs = {uniform("x", r.x)},
                   .build = [axes, kd, c](Graph&, Inputs in) { return var(in[0], axes, c, kd); },
                   .torch = "torch.var(x, " + kw(r) + ", correction=" + str(c) + ")"});
    }
  }
  // Over every axis: the chunked full reduction (op sum), reshaped.
  t.push_back({.op = "sum",
               .name = "2x3x4_axes_all_keep",
               .inputs = {uniform("x", {2, 3, 4})},
               .build = [](Graph&, Inputs in) { return sum(in[0], {0, 1, 2}, true); },
               .torch = "torch.sum(x, dim=(0, 1, 2), keepdim=True)"});
  t.push_back({.op = "sum",
               .name = "2x3x4_axes_empty_list_is_all",
               .inputs = {uniform("x", {2, 3, 4})},
               .build = [](Graph&, Inputs in) { return sum(in[0], {}); },
               .torch = "torch.sum(x, dim=[])"});
  t.push_back({.op = "max_axes",
               .name = "2x3x4_axes_empty_list_is_all",
               .inputs = {distinct("x", {2, 3, 4})},
               .build = [](Graph&, Inputs in) { return max(in[0], {}); },
               .torch = "torch.amax(x, dim=[])"});
  // The default correction is torch's unbiased=True.
  t.push_back({.op = "var_axes",
               .name = "5x6_axes1_default",
               .inputs = {uniform("x", {5, 6})},
               .build = [](Graph&, Inputs in) { return var(in[0], {1}); },
               .torch = "torch.var(x, 1)"});
}

void add_permute_cases(Table& t) {
  struct Row {
    Shape x;
    std::vector<int> order;
  };
  const Row rows[] = {
      {{2, 3, 4}, {2, 0, 1}},        // rotate
      {{2, 3, 4, 5}, {0, 2, 3, 1}},  // NCHW -> NHWC
      {{2, 4, 5, 3}, {0, 3, 1, 2}},  // NHWC -> NCHW
      {{2, 3, 4, 5}, {3, 2, 1, 0}},  // reverse
      {{1, 5, 1, 3}, {3, 1, 0, 2}},  // size-1 axes
      {{4, 6, 5}, {1, 0, 2}},        // the last axis stays: rows copied whole
      {{2, 3, 4}, {-1, 0, -2}},      // negative axes
      {{40, 70}, {1, 0}},            // a transpose with partial tiles
      {{3, 64, 65}, {0, 2, 1}},      // batched transposes
      {{8, 16, 20, 20}, {0, 2, 3, 1}},  // large enough for the parallel path
      {{2, 3, 2, 3, 2}, {4, 2, 0, 3, 1}},  // rank 5
  };
  for (const Row& r : rows) {
    const std::vector<int> order = r.order;
    t.push_back({.op = "permute",
                 .name = shape_name(r.x) + "_order" + axes_name(r.order),
                 .inputs = {uniform("x", r.x)},
                 .build = [order](Graph&, Inputs in) { return permute(in[0], order); },
                 .torch = "x.permute" + py_axes(r.order)});
  }
  t.push_back({.op = "permute",
               .name = "transpose_2x3x4_axes0_m1",
               .inputs = {uniform("x", {2, 3, 4})},
               .build = [](Graph&, Inputs in) { return transpose(in[0], 0, -1); },
               .torch = "torch.transpose(x, 0, -1)"});
}

void add_concat_cases(Table& t) {
  struct Row {
    const char* name;
    std::vector<Shape> xs;
    int axis;
  };
  const Row rows[] = {
      {"columns", {{2, 3}, {2, 5}}, 1},
      {"rows_of_three_inputs", {{2, 3, 4}, {1, 3, 4}, {3, 3, 4}}, 0},
      {"last_axis_negative", {{2, 3, 1}, {2, 3, 4}}, -1},
      {"channels", {{2, 3, 4, 5}, {2, 2, 4, 5}}, 1},
      {"middle_axis_of_size_one", {{3, 1, 4}, {3, 1, 4}}, -2},
      {"large", {{64, 300}, {64, 200}}, 1},
  };
  for (const Row& r : rows) {
    const int axis = r.axis;
    OpCase c{.op = "concat", .name = r.name};
    std::string names;
    for (std::size_t i = 0; i < r.xs.size(); ++i) {
      const std::string n = std::string(1, static_cast<char>('a' + i));
      c.inputs.push_back(uniform(n, r.xs[i]));
      names += (i ? ", " : "") + n;
    }
    c.build = [axis](Graph&, Inputs in) {
      return concat(std::vector<Value>(in.begin(), in.end()), axis);
    };
    c.torch = "torch.cat((" + names + "), " + str(axis) + ")";
    t.push_back(std::move(c));
  }
}

struct SliceRow {
  Shape x;
  int axis;
  std::int64_t start, end, step;
};

const SliceRow kSliceRows[] = {
    {{5, 7}, 1, 1, 6, 2},           // a step
    {{5, 7}, 0, -3, 1000, 1},       // negative start, end past the axis
    {{2, 3, 4}, -1, 0, 4, 3},       // negative axis, step leaving one unread
    {{4, 6, 5}, 1, -100, -2, 1},    // start before the axis, negative end
    {{3, 8}, 1, 2, 3, 1},           // one element
    {{2, 3, 10, 10}, 2, 1, 9, 2},   // rows of images
    {{100, 300}, 0, 10, 90, 1},     // large enough for the parallel path
    {{3, 4}, 1, 3, 1, 1},           // an empty range: a size-0 axis
};

std::string py_slice(const SliceRow& r) {
  const int axis = r.axis < 0 ? r.axis + r.x.rank() : r.axis;
  std::string s = "[";
  for (int i = 0; i < axis; ++i) s += ":, ";
  return s + str(r.start) + ":" + str(r.end) + ":" + str(r.step) + "]";
}

void add_slice_cases(Table& t) {
  for (const SliceRow& r : kSliceRows) {
    const SliceRow row = r;
    const std::string name = shape_name(r.x) + "_axis" + (r.axis < 0 ? "m" + str(-r.axis) : str(r.axis)) +
                             "_" + (r.start < 0 ? "m" + str(-r.start) : str(r.start)) + "_" +
                             (r.end < 0 ? "m" + str(-r.end) : str(r.end)) + "_step" + str(r.step);
    t.push_back({.op = "slice",
                 .name = name,
                 .inputs = {uniform("x", r.x)},
                 .build =
                     [row](Graph&, Inputs in) {
                       return slice(in[0], row.axis, row.start, row.end, row.step);
                     },
                 .torch = "x" + py_slice(r)});
    // The gradient kernel, given a gradient of the slice's shape (not an empty one: the
    // gradcheck cannot feed an input without elements).
    Graph g;
    const Shape ys = slice(g.input("x", r.x), r.axis, r.start, r.end, r.step).shape();
    if (ys.numel() == 0) continue;
    t.push_back({.op = "slice_backward",
                 .name = name,
                 .inputs = {uniform("gy", ys)},
                 .build =
                     [row](Graph&, Inputs in) {
                       return slice_backward(in[0], row.x, row.axis, row.start, row.end,
                                             row.step);
                     },
                 .torch = "vjp(lambda z: z" + py_slice(r) + ", " + py_shape(r.x) + ", gy)"});
  }
}

void add_pad_cases(Table& t) {
  struct Row {
    Shape x;
    std::vector<std::int64_t> pads;
    double value;
  };
  const Row rows[] = {
      {{2, 3, 4, 5}, {1, 2}, 0.0},              // the last axis
      {{2, 3, 4, 5}, {1, 1, 2, 0}, 0.5},        // two axes, a value
      {{3, 4}, {2, 1, 0, 3}, -1.0},             // both axes of a matrix
      {{3, 4}, {-1, 2}, 0.0},                   // cropping on one side
      {{2, 3, 4}, {0, 0, 0, 0, 1, 1}, 0.0},     // the first axis only
      {{1, 1, 5, 5}, {3, 3, 3, 3}, 0.0},        // padding wider than half the image
      {{2, 3, 4}, {-1, -1, 1, -1}, 2.0},        // crops and pads mixed
      {{8, 16, 20, 20}, {1, 1, 1, 1}, 0.0},     // large enough for the parallel path
  };
  for (const Row& r : rows) {
    const std::vector<std::int64_t> pads = r.pads;
    const double v = r.value;
    std::string name = shape_name(r.x) + "_pads";
    std::string tuple = "(";
    for (std::size_t i = 0; i < pads.size(); ++i) {
      name += "_" + (pads[i] < 0 ? "m" + str(-pads[i]) : str(pads[i]));
      tuple += (i ? ", " : "") + str(pads[i]);
    }
    tuple += ")";
    if (v != 0.0) name += "_value";
    t.push_back({.op = "pad",
                 .name = name,
                 .inputs = {uniform("x", r.x)},
                 .build = [pads, v](Graph&, Inputs in) { return pad(in[0], pads, v); },
                 .torch = "F.pad(x, " + tuple + ", value=" + py_float(v) + ")"});
  }
}

// NumPy broadcasting of per-channel vectors over images, through the helper and sum_to.
void add_per_channel_cases(Table& t) {
  t.push_back({.op = "mul",
               .name = "PerChannelScaleOverImages",
               .inputs = {uniform("x", {2, 3, 4, 5}), uniform("gamma", {3})},
               .build = [](Graph&, Inputs in) { return mul(in[0], per_channel(in[1], in[0])); },
               .torch = "x * gamma.reshape(3, 1, 1)"});
  t.push_back({.op = "add",
               .name = "PerChannelShiftOverFeatures",
               .inputs = {uniform("x", {4, 6}), uniform("beta", {6})},
               .build = [](Graph&, Inputs in) { return add(in[0], per_channel(in[1], in[0])); },
               .torch = "x + beta"});
  t.push_back({.op = "sum_to",
               .name = "ChannelBiasRank4",
               .inputs = {uniform("x", {4, 3, 2, 5})},
               .build = [](Graph&, Inputs in) { return sum_to(in[0], {1, 3, 1, 1}); },
               .torch = "x.sum_to_size((1, 3, 1, 1))"});
  t.push_back({.op = "broadcast_to",
               .name = "ChannelBiasRank4",
               .inputs = {uniform("x", {1, 3, 1, 1})},
               .build = [](Graph&, Inputs in) { return broadcast_to(in[0], {4, 3, 2, 5}); },
               .torch = "torch.broadcast_to(x, (4, 3, 2, 5))"});
}

}  // namespace

void add_shape_cases(Table& t) {
  add_reduce_axes_cases(t);
  add_permute_cases(t);
  add_concat_cases(t);
  add_slice_cases(t);
  add_pad_cases(t);
  add_per_channel_cases(t);
}

}  // namespace tbgrad::testing::cases
