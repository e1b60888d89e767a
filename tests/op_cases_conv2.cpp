// The op table's rows for grouped and dilated convolutions, conv_transpose2d and the global
// pools (tests/op_cases.hpp). The groups == 1, dilation == 1 convolutions keep their rows in
// kConvRows (tests/op_cases.cpp); the rows here run the direct kernels (ops/conv2d_general.cpp),
// except the conv_transpose2d rows without groups or dilation, which run the dense
// input-gradient kernels.
//
// global_max_pool2d's inputs are distinct (InputKind::kDistinct), so no plane has a tie;
// GlobalMaxPool2dBackward.GivesTiesToTheFirstMaximumInRowMajorOrder
// (tests/test_ops_gradcheck.cpp) tests the rule by hand.
#include <string>
#include <utility>

#include "op_case_util.hpp"

namespace tbgrad::testing::cases {
namespace {

// ---------------------------------------------------------------------------------------------
// conv2d with groups and dilation, and its gradient kernels
// ---------------------------------------------------------------------------------------------

struct GroupedConvRow {
  int n, c, h, w;  // input [N, C, H, W]
  int oc, kh, kw;  // weight [OC, C/G, KH, KW]
  int sh, sw;      // stride
  int ph, pw;      // padding
  int dh, dw;      // dilation
  int groups;
  bool bias;
};

std::int64_t dilated_out(std::int64_t in, int k, int s, int p, int d) {
  return (in + 2 * std::int64_t{p} - d * (k - 1) - 1) / s + 1;
}

const GroupedConvRow kGroupedConvRows[] = {
    // n  c  h   w  oc kh kw sh sw ph pw dh dw  g  bias
    {2, 4, 7, 8, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, true},      // groups 2
    {1, 6, 9, 7, 3, 3, 2, 2, 1, 1, 0, 1, 1, 3, false},     // groups 3, stride and kernel non-square
    {2, 6, 5, 5, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2, false},     // grouped 1x1 kernel
    {2, 4, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4, true},      // depthwise
    {1, 3, 7, 9, 6, 3, 3, 2, 2, 1, 1, 1, 1, 3, true},      // depthwise, channel multiplier 2
    {5, 3, 11, 10, 3, 3, 3, 2, 2, 2, 2, 2, 2, 3, true},    // depthwise, stride 2, dilation 2
    {2, 2, 9, 9, 3, 3, 3, 1, 1, 0, 0, 2, 2, 1, true},      // dilation 2
    {1, 2, 12, 7, 2, 3, 3, 1, 1, 3, 1, 3, 1, 1, false},    // dilation 3 on H only
    {1, 3, 6, 11, 2, 2, 3, 1, 2, 0, 2, 1, 2, 1, true},     // dilation 2 on W only, stride 2 on W
    {5, 2, 10, 13, 4, 3, 2, 2, 3, 2, 1, 2, 3, 2, true},    // everything non-square, groups 2
    {1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0, 2, 2, 1, true},      // dilated kernel as large as the input
    {1, 2, 1, 1, 2, 3, 3, 1, 1, 2, 2, 2, 2, 2, true},      // a 1x1 image inside its padding
    {1, 2, 3, 17, 4, 1, 5, 1, 1, 0, 4, 1, 2, 2, false},    // a long row, groups and dilation
    {4, 8, 24, 20, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8, true},    // depthwise, large enough to run in parallel
    {3, 8, 20, 22, 12, 3, 3, 1, 1, 2, 2, 2, 2, 4, true},   // grouped and dilated, in parallel
    {2, 3, 16, 16, 6, 5, 5, 2, 2, 4, 4, 2, 2, 1, true},    // dilation 2, stride 2, 5x5
};

void add_grouped_conv_cases(Table& t, const GroupedConvRow& r) {
  const Shape xs{r.n, r.c, r.h, r.w};
  const Shape ws{r.oc, r.c / r.groups, r.kh, r.kw};
  const Shape ys{r.n, r.oc, dilated_out(r.h, r.kh, r.sh, r.ph, r.dh),
                 dilated_out(r.w, r.kw, r.sw, r.pw, r.dw)};
  const Conv2dOptions o{.stride = {r.sh, r.sw},
                        .padding = {r.ph, r.pw},
                        .dilation = {r.dh, r.dw},
                        .groups = r.groups};
  const std::string geometry =
      "n" + str(r.n) + "_c" + str(r.c) + "_in" + str(r.h) + "x" + str(r.w) + "_oc" + str(r.oc) +
      "_k" + str(r.kh) + "x" + str(r.kw) + "_s" + str(r.sh) + "x" + str(r.sw) + "_p" + str(r.ph) +
      "x" + str(r.pw) + "_d" + str(r.dh) + "x" + str(r.dw) + "_g" + str(r.groups);
  const std::string args = "stride=" + py_pair(r.sh, r.sw) + ", padding=" + py_pair(r.ph, r.pw) +
                           ", dilation=" + py_pair(r.dh, r.dw) + ", groups=" + str(r.groups);

  OpCase conv{.op = "conv2d", .name = geometry + (r.bias ? "_bias" : "_nobias"), .options = o};
  conv.inputs = {uniform("x", xs), uniform("w", ws)};
  if (r.bias) {
    conv.inputs.push_back(uniform("b", {r.oc}));
    conv.build = [o](Graph&, Inputs in) { return conv2d(in[0], in[1], in[2], o); };
    conv.torch = "F.conv2d(x, w, b, " + args + ")";
  } else {
    conv.build = [o](Graph&, Inputs in) { return conv2d(in[0], in[1], o); };
    conv.torch = "F.conv2d(x, w, None, " + args + ")";
  }
  t.push_back(std::move(conv));
  t.push_back(
      {.op = "conv2d_backward_input",
       .name = geometry,
       .inputs = {uniform("gy", ys), uniform("w", ws)},
       .build = [o, xs](Graph&, Inputs in) { return conv2d_backward_input(in[0], in[1], xs, o); },
       .torch = "vjp(lambda z: F.conv2d(z, w, None, " + args + "), " + py_shape(xs) + ", gy)",
       .options = o});
  t.push_back(
      {.op = "conv2d_backward_weight",
       .name = geometry,
       .inputs = {uniform("x", xs), uniform("gy", ys)},
       .build = [o, ws](Graph&, Inputs in) { return conv2d_backward_weight(in[0], in[1], ws, o); },
       .torch = "vjp(lambda v: F.conv2d(x, v, None, " + args + "), " + py_shape(ws) + ", gy)",
       .options = o});
}

// ---------------------------------------------------------------------------------------------
// conv_transpose2d
// ---------------------------------------------------------------------------------------------

struct TransposeRow {
  int n, ic, h, w;  // input [N, IC, H, W]
  int oc, kh, kw;   // weight [IC, OC/G, KH, KW]
  int sh, sw;       // stride
  int ph, pw;       // padding
  int oph, opw;     // output padding
  int dh, dw;       // dilation
  int groups;
  bool bias;
};

const TransposeRow kTransposeRows[] = {
    // n ic  h   w oc kh kw sh sw ph pw oph opw dh dw  g  bias
    {1, 2, 4, 4, 3, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1, true},     // stride 1: the dense conv path
    {2, 3, 5, 4, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, true},     // stride 2, output padding 1
    {1, 2, 3, 5, 4, 4, 2, 2, 1, 1, 0, 0, 0, 1, 1, 1, false},    // non-square kernel and stride
    {1, 2, 5, 5, 2, 2, 2, 1, 1, 2, 2, 0, 0, 1, 1, 1, true},     // padding of the kernel's size
    {2, 4, 5, 5, 6, 3, 3, 2, 2, 1, 1, 1, 0, 1, 1, 2, true},     // groups 2, output padding on H
    {1, 4, 6, 5, 4, 3, 3, 1, 1, 1, 1, 0, 0, 1, 1, 4, true},     // depthwise
    {5, 2, 4, 6, 2, 3, 2, 3, 2, 2, 1, 2, 1, 2, 3, 1, true},     // dilation, stride, output padding
    {1, 3, 6, 6, 3, 3, 3, 1, 1, 2, 2, 0, 0, 2, 2, 3, false},    // depthwise, dilated
    {1, 1, 1, 1, 2, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1, 1, true},     // a 1x1 input
    {3, 8, 10, 12, 8, 4, 4, 2, 2, 1, 1, 0, 0, 1, 1, 1, true},   // kernel 4, stride 2: doubles H, W
    {2, 6, 9, 8, 9, 3, 3, 2, 2, 1, 1, 1, 1, 2, 2, 3, true},     // everything at once, in parallel
};

void add_transpose_cases(Table& t, const TransposeRow& r) {
  const Shape xs{r.n, r.ic, r.h, r.w};
  const Shape ws{r.ic, r.oc / r.groups, r.kh, r.kw};
  const ConvTranspose2dOptions o{.stride = {r.sh, r.sw},
                                 .padding = {r.ph, r.pw},
                                 .output_padding = {r.oph, r.opw},
                                 .groups = r.groups,
                                 .dilation = {r.dh, r.dw}};
  const std::string name =
      "n" + str(r.n) + "_ic" + str(r.ic) + "_in" + str(r.h) + "x" + str(r.w) + "_oc" +
      str(r.oc) + "_k" + str(r.kh) + "x" + str(r.kw) + "_s" + str(r.sh) + "x" + str(r.sw) +
      "_p" + str(r.ph) + "x" + str(r.pw) + "_op" + str(r.oph) + "x" + str(r.opw) + "_d" +
      str(r.dh) + "x" + str(r.dw) + "_g" + str(r.groups) + (r.bias ? "_bias" : "_nobias");
  const std::string args = "stride=" + py_pair(r.sh, r.sw) + ", padding=" + py_pair(r.ph, r.pw) +
                           ", output_padding=" + py_pair(r.oph, r.opw) +
                           ", groups=" + str(r.groups) + ", dilation=" + py_pair(r.dh, r.dw);
  OpCase c{.op = "conv_transpose2d", .name = name};
  c.inputs = {uniform("x", xs), uniform("w", ws)};
  if (r.bias) {
    c.inputs.push_back(uniform("b", {r.oc}));
    c.build = [o](Graph&, Inputs in) { return conv_transpose2d(in[0], in[1], in[2], o); };
    c.torch = "F.conv_transpose2d(x, w, b, " + args + ")";
  } else {
    c.build = [o](Graph&, Inputs in) { return conv_transpose2d(in[0], in[1], o); };
    c.torch = "F.conv_transpose2d(x, w, None, " + args + ")";
  }
  t.push_back(std::move(c));
}

// ---------------------------------------------------------------------------------------------
// Global pooling
// ---------------------------------------------------------------------------------------------

const Shape kGlobalPoolShapes[] = {
    {1, 1, 1, 1},    // a single element
    {2, 3, 5, 7},    // odd planes, shorter than the interleaved sums
    {5, 4, 1, 9},    // one row
    {1, 2, 17, 1},   // one column
    {3, 2, 33, 31},  // planes with a remainder after the interleaved sums
    {4, 70, 9, 9},   // enough planes to run in parallel
};

void add_global_pool_cases(Table& t, const Shape& xs) {
  const std::string name = "n" + str(xs[0]) + "_c" + str(xs[1]) + "_in" + str(xs[2]) + "x" +
                           str(xs[3]);
  const Shape ys{xs[0], xs[1], 1, 1};
  t.push_back({.op = "global_avg_pool2d",
               .name = name,
               .inputs = {uniform("x", xs)},
               .build = [](Graph&, Inputs in) { return global_avg_pool2d(in[0]); },
               .torch = "F.adaptive_avg_pool2d(x, 1)"});
  t.push_back({.op = "global_max_pool2d",
               .name = name,
               .inputs = {distinct("x", xs)},
               .build = [](Graph&, Inputs in) { return global_max_pool2d(in[0]); },
               .torch = "F.adaptive_max_pool2d(x, 1)"});
  t.push_back({.op = "global_max_pool2d_backward",
               .name = name,
               .inputs = {distinct("x", xs), uniform("gy", ys)},
               .build = [](Graph&, Inputs in) { return global_max_pool2d_backward(in[0], in[1]); },
               .torch = "vjp(lambda z: F.adaptive_max_pool2d(z, 1), x, gy)",
               .gradient_of = [](Graph&, Inputs in) { return global_max_pool2d(in[0]); }});
}

}  // namespace

void add_conv2_cases(Table& t) {
  for (const GroupedConvRow& r : kGroupedConvRows) add_grouped_conv_cases(t, r);
  for (const TransposeRow& r : kTransposeRows) add_transpose_cases(t, r);
  for (const Shape& s : kGlobalPoolShapes) add_global_pool_cases(t, s);
}

}  // namespace tbgrad::testing::cases
