// The table of op test cases (tests/op_cases.hpp). Each op family has a row type and a function
// that turns a row into the cases of its ops: the forward op and its gradient kernels share the
// geometry of a row. Rows cover odd sizes, size-1 dimensions, strides and padding on each axis,
// and sizes large enough for the kernels' register tiles, vector remainders and parallel paths.
//
// Where the gradient is a convention rather than a derivative, the inputs avoid it:
// - relu at exactly 0: tbgrad's gradient there is 0, as torch's is, but central differences
//   straddle the kink. relu's inputs stay away from zero (InputKind::kAwayFromZero).
// - Max pooling's ties: tbgrad gives the gradient to the first maximum in row-major window
//   order, a rule torch does not document. The inputs are distinct (InputKind::kDistinct), so no
//   window has a tie; MaxPool2dBackward.GivesTiesToTheFirstMaximumInRowMajorOrder
//   (tests/test_ops_gradcheck.cpp) tests tbgrad's rule by hand.
// - Average pooling divides every window by KH*KW (padded cells count as zeros): that is torch's
//   count_include_pad=True, which divides by the window clipped to the padded image, and with
//   floor rounding (ceil_mode=False) no window reaches past the padding.
#include "op_cases.hpp"

#include "op_case_util.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace tbgrad::testing {
namespace cases {
namespace {

// ---------------------------------------------------------------------------------------------
// conv2d and its three gradient kernels (each with a VJP: gradchecked like the forward op)
// ---------------------------------------------------------------------------------------------

struct ConvRow {
  int n, c, h, w;  // input [N, C, H, W]
  int oc, kh, kw;  // weight [OC, C, KH, KW]
  int sh, sw;      // stride
  int ph, pw;      // padding
  bool bias;
};

const ConvRow kConvRows[] = {
    // n  c  h   w  oc kh kw sh sw ph pw bias
    {1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0, true},     // smallest useful case
    {2, 1, 8, 8, 3, 5, 5, 1, 1, 0, 0, true},     // the reference CNN's first conv (5x5, 3 maps)
    {4, 1, 28, 28, 3, 5, 5, 1, 1, 0, 0, true},   // ... at its real size
    {2, 3, 9, 9, 5, 3, 3, 1, 1, 0, 0, true},     // the reference CNN's second conv (3x3, 5 maps)
    {4, 3, 11, 11, 5, 3, 3, 1, 1, 0, 0, true},   // ... at its real size
    {1, 2, 7, 7, 2, 3, 3, 2, 2, 0, 0, false},    // odd input, stride 2
    {2, 2, 8, 8, 2, 3, 3, 2, 2, 1, 1, true},     // even input, stride 2, padding 1
    {1, 3, 9, 9, 2, 3, 3, 3, 3, 0, 0, true},     // stride 3 equal to the kernel
    {2, 1, 10, 10, 2, 2, 2, 3, 3, 0, 0, true},   // stride larger than the kernel
    {1, 1, 11, 11, 1, 1, 1, 3, 3, 0, 0, false},  // 1x1 kernel, stride 3
    {2, 2, 6, 6, 3, 4, 4, 2, 2, 0, 0, true},     // overlapping windows: kernel 4, stride 2
    {1, 3, 7, 7, 2, 4, 4, 2, 2, 2, 2, false},    // overlapping windows with padding 2
    {3, 1, 5, 5, 2, 3, 3, 1, 1, 2, 2, true},     // padding 2: output larger than the input
    {1, 2, 6, 9, 2, 3, 3, 1, 1, 1, 1, true},     // non-square input
    {2, 1, 7, 6, 2, 2, 4, 1, 1, 0, 0, true},     // non-square kernel
    {1, 2, 8, 7, 3, 3, 2, 2, 1, 0, 0, false},    // non-square kernel and stride
    {2, 3, 6, 7, 2, 3, 3, 1, 2, 1, 0, true},     // non-square stride and padding
    {1, 1, 5, 8, 2, 5, 3, 1, 3, 2, 1, true},     // everything non-square
    {2, 2, 9, 8, 2, 3, 5, 3, 2, 0, 2, false},    // everything non-square, stride 3
    {1, 1, 4, 4, 1, 4, 4, 1, 1, 0, 0, true},     // kernel as large as the input: 1x1 output
    {1, 1, 1, 1, 1, 3, 3, 1, 1, 1, 1, true},     // a 1x1 image: only its padding around it
    {2, 2, 1, 7, 3, 1, 3, 1, 1, 0, 1, true},     // images of one row
    {4, 1, 6, 6, 2, 3, 3, 1, 1, 0, 0, true},     // batch 4: one chunk of the batch reduction
    {5, 2, 5, 5, 2, 3, 3, 2, 2, 1, 1, true},     // batch 5: two chunks of the batch reduction
    {1, 3, 8, 8, 1, 2, 2, 2, 2, 0, 0, false},    // stride equal to an even kernel
    {2, 1, 7, 7, 1, 3, 3, 2, 2, 0, 0, true},     // stride divides H - K exactly
    {1, 2, 8, 8, 2, 3, 3, 2, 2, 0, 0, false},    // stride leaves the last row and column unread
    {1, 1, 6, 6, 1, 3, 3, 3, 3, 1, 1, true},     // stride 3 with padding
    {2, 3, 32, 30, 4, 5, 3, 2, 1, 2, 1, true},   // larger, enough work to run in parallel
    // Output channels in register-tile blocks of several sizes (ops/conv2d_kernels.cpp).
    {2, 2, 5, 6, 7, 3, 3, 1, 1, 1, 1, true},      // 7 channels: one block, or 3 + 4
    {2, 3, 9, 10, 7, 3, 3, 1, 1, 1, 1, true},     // ... on a larger image
    {2, 2, 10, 9, 8, 2, 3, 1, 1, 0, 1, true},     // 8 channels
    {1, 2, 6, 5, 16, 2, 3, 1, 1, 0, 1, false},    // 16 channels: 8 + 8, or 5 + 5 + 6
    {1, 4, 12, 12, 16, 3, 3, 1, 1, 0, 0, false},  // ... on a larger image
    {1, 2, 3, 40, 6, 1, 5, 1, 1, 0, 0, true},     // wide rows, a single output row
    // Weight gradients with a task per (channel block, input channel), summed over the whole
    // batch (Note [Whole-batch weight gradient]): 2 blocks x 16 channels, 1 x 40, and stride 2
    // (run as stride 1 over 4 x 8 phase channels: Note [Phases]); and 16 x 16 planes, too
    // large for it.
    {3, 16, 7, 6, 9, 3, 3, 1, 1, 1, 1, true},
    {2, 40, 5, 5, 3, 3, 2, 1, 1, 0, 1, false},
    {3, 8, 9, 8, 5, 3, 3, 2, 2, 1, 1, true},
    {2, 16, 16, 16, 9, 3, 3, 1, 1, 1, 1, false},
};

void add_conv_cases(Table& t, const ConvRow& r) {
  const Shape xs{r.n, r.c, r.h, r.w};
  const Shape ws{r.oc, r.c, r.kh, r.kw};
  const Shape ys{r.n, r.oc, out_size(r.h, r.kh, r.sh, r.ph), out_size(r.w, r.kw, r.sw, r.pw)};
  const Conv2dOptions o{.stride = {r.sh, r.sw}, .padding = {r.ph, r.pw}};
  const std::string geometry = "n" + str(r.n) + "_c" + str(r.c) + "_in" + str(r.h) + "x" +
                               str(r.w) + "_oc" + str(r.oc) + "_k" + str(r.kh) + "x" + str(r.kw) +
                               "_s" + str(r.sh) + "x" + str(r.sw) + "_p" + str(r.ph) + "x" +
                               str(r.pw);
  const std::string args = "stride=" + py_pair(r.sh, r.sw) + ", padding=" + py_pair(r.ph, r.pw);

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
  t.push_back({.op = "conv2d_backward_bias",
               .name = geometry,
               .inputs = {uniform("gy", ys)},
               .build = [](Graph&, Inputs in) { return conv2d_backward_bias(in[0]); },
               .torch = "gy.sum((0, 2, 3))",
               .options = o});
}

// ---------------------------------------------------------------------------------------------
// Pooling: avg_pool2d and its gradient kernel (with a VJP), max_pool2d and its (without one)
// ---------------------------------------------------------------------------------------------

struct PoolRow {
  int n, c, h, w;  // input [N, C, H, W]
  int kh, kw;      // kernel
  int sh, sw;      // stride (0: the kernel size)
  int ph, pw;      // padding, at most half the kernel
};

const PoolRow kPoolRows[] = {
    // n  c  h   w  kh kw sh sw ph pw
    {1, 1, 4, 4, 2, 2, 0, 0, 0, 0},     // default stride (= kernel)
    {2, 3, 12, 12, 4, 4, 2, 2, 0, 0},   // the reference CNN's first pooling: kernel 4, stride 2
    {1, 3, 24, 24, 4, 4, 2, 2, 0, 0},   // ... at its real size (24x24 -> 11x11)
    {4, 3, 24, 24, 4, 4, 2, 2, 0, 0},   // ... and batch
    {2, 5, 9, 9, 3, 3, 1, 1, 0, 0},     // the reference CNN's second pooling: kernel 3, stride 1
    {4, 5, 9, 9, 3, 3, 1, 1, 0, 0},     // ... at batch 4
    {1, 2, 7, 7, 3, 3, 2, 2, 1, 1},     // odd input, overlapping windows, padding 1
    {2, 1, 8, 8, 4, 4, 2, 2, 2, 2},     // overlapping windows, padding 2 (half the kernel)
    {1, 1, 10, 10, 2, 2, 3, 3, 0, 0},   // stride larger than the kernel
    {1, 2, 11, 11, 3, 3, 4, 4, 1, 1},   // stride larger than the kernel, with padding
    {3, 1, 5, 5, 3, 3, 1, 1, 1, 1},     // batch 3, padding 1, stride 1
    {1, 3, 6, 9, 2, 3, 2, 3, 0, 0},     // non-square input and kernel
    {2, 1, 7, 8, 3, 2, 1, 2, 1, 1},     // non-square kernel and stride
    {1, 2, 9, 6, 4, 2, 3, 1, 2, 0},     // non-square padding
    {2, 2, 8, 8, 2, 2, 1, 1, 0, 0},     // kernel 2, stride 1
    {1, 1, 5, 5, 5, 5, 1, 1, 0, 0},     // one window covering the whole input
    {1, 1, 5, 5, 5, 5, 1, 1, 2, 2},     // kernel 5 with padding 2
    {2, 3, 7, 7, 3, 3, 3, 3, 0, 0},     // stride = kernel, last row and column unread
    {1, 1, 6, 6, 1, 1, 2, 2, 0, 0},     // 1x1 kernel, stride 2
    {1, 1, 1, 1, 1, 1, 0, 0, 0, 0},     // a 1x1 image and kernel
    {2, 3, 1, 9, 1, 3, 1, 2, 0, 1},     // images of one row
    {4, 2, 6, 5, 3, 2, 2, 1, 1, 0},     // batch 4, everything non-square
    {1, 3, 9, 9, 3, 3, 2, 2, 0, 0},     // odd input, kernel 3, stride 2
    {2, 1, 10, 7, 4, 3, 2, 2, 1, 1},    // non-square, overlapping, padded
    {1, 2, 4, 6, 2, 4, 2, 1, 1, 2},     // padding on both axes, wide kernel
    {3, 2, 8, 6, 3, 3, 2, 2, 1, 1},     // even input, kernel 3, stride 2, padding 1
    {8, 16, 20, 20, 3, 3, 2, 2, 1, 1},  // many planes: enough work to run in parallel
    {1, 1, 12, 12, 8, 8, 2, 2, 0, 0},   // window wider than 7: summed pass by pass
    {2, 2, 20, 20, 8, 8, 2, 2, 0, 0},   // ... on more planes
    {1, 2, 5, 37, 3, 3, 1, 1, 1, 0},    // rows of several vectors at every width, stride 1
    {2, 3, 10, 41, 3, 3, 1, 1, 1, 1},   // ... padded on both axes
    {1, 1, 6, 40, 2, 4, 2, 2, 0, 1},    // ... and stride 2
    {1, 2, 9, 40, 3, 4, 1, 2, 0, 0},    // ... unpadded
};

void add_pool_cases(Table& t, const PoolRow& r) {
  const int sh = r.sh ? r.sh : r.kh, sw = r.sw ? r.sw : r.kw;
  const Shape xs{r.n, r.c, r.h, r.w};
  const Shape ys{r.n, r.c, out_size(r.h, r.kh, sh, r.ph), out_size(r.w, r.kw, sw, r.pw)};
  const Pool2dOptions o{.kernel = {r.kh, r.kw}, .stride = {r.sh, r.sw}, .padding = {r.ph, r.pw}};
  const std::string name = "n" + str(r.n) + "_c" + str(r.c) + "_in" + str(r.h) + "x" + str(r.w) +
                           "_k" + str(r.kh) + "x" + str(r.kw) +
                           (r.sh || r.sw ? "_s" + str(r.sh) + "x" + str(r.sw) : "_sdefault") +
                           "_p" + str(r.ph) + "x" + str(r.pw);
  const std::string args =
      py_pair(r.kh, r.kw) + ", " + py_pair(sh, sw) + ", " + py_pair(r.ph, r.pw);
  auto avg = [args](const std::string& v) {
    return "F.avg_pool2d(" + v + ", " + args + ", count_include_pad=True)";
  };
  auto max = [args](const std::string& v) { return "F.max_pool2d(" + v + ", " + args + ")"; };

  t.push_back({.op = "avg_pool2d",
               .name = name,
               .inputs = {uniform("x", xs)},
               .build = [o](Graph&, Inputs in) { return avg_pool2d(in[0], o); },
               .torch = avg("x"),
               .options = o});
  t.push_back({.op = "avg_pool2d_backward",
               .name = name,
               .inputs = {uniform("gy", ys)},
               .build = [o, xs](Graph&, Inputs in) { return avg_pool2d_backward(in[0], xs, o); },
               .torch = "vjp(lambda z: " + avg("z") + ", " + py_shape(xs) + ", gy)",
               .options = o});
  t.push_back({.op = "max_pool2d",
               .name = name,
               .inputs = {distinct("x", xs)},
               .build = [o](Graph&, Inputs in) { return max_pool2d(in[0], o); },
               .torch = max("x"),
               .options = o});
  t.push_back({.op = "max_pool2d_backward",
               .name = name,
               .inputs = {distinct("x", xs), uniform("gy", ys)},
               .build = [o](Graph&, Inputs in) { return max_pool2d_backward(in[0], in[1], o); },
               .torch = "vjp(lambda z: " + max("z") + ", x, gy)",
               .options = o,
               .gradient_of = [o](Graph&, Inputs in) { return max_pool2d(in[0], o); }});
}

// ---------------------------------------------------------------------------------------------
// Broadcasting binary ops, scale and the activations with their gradient kernels
// ---------------------------------------------------------------------------------------------

struct BroadcastPair {
  const char* name;
  Shape a, b;
};

const BroadcastPair kBroadcastPairs[] = {
    {"SameShape", {3, 4}, {3, 4}},
    {"ChannelBiasOverImages", {2, 3, 4, 5}, {3, 1, 1}},
    {"ImagesOverChannelBias", {3, 1, 1}, {2, 3, 4, 5}},
    {"FeatureBiasOverBatch", {4, 6}, {6}},
    {"ScalarWithMatrix", {}, {3, 4}},
    {"MatrixWithScalar", {3, 4}, {}},
    {"ColumnWithRow", {4, 1}, {1, 5}},
    {"LengthOneWithMatrix", {1}, {2, 3}},
};

void add_binary_cases(Table& t) {
  using Fn = Value (*)(Value, Value);
  const std::pair<const char*, std::pair<Fn, const char*>> ops[] = {
      {"add", {&tbgrad::add, "a + b"}},
      {"sub", {&tbgrad::sub, "a - b"}},
      {"mul", {&tbgrad::mul, "a * b"}}};
  for (const auto& [op, fn_torch] : ops) {
    const Fn fn = fn_torch.first;
    for (const BroadcastPair& p : kBroadcastPairs) {
      t.push_back({.op = op,
                   .name = p.name,
                   .inputs = {uniform("a", p.a), uniform("b", p.b)},
                   .build = [fn](Graph&, Inputs in) { return fn(in[0], in[1]); },
                   .torch = fn_torch.second});
    }
  }
}

void add_scale_cases(Table& t) {
  for (const auto& [factor, name] : {std::pair{2.5, "by_2p5"}, std::pair{-0.75, "by_minus_0p75"},
                                     std::pair{0.0, "by_0"}, std::pair{1.0, "by_1"}}) {
    const double f = factor;
    t.push_back({.op = "scale",
                 .name = name,
                 .inputs = {uniform("x", {3, 4})},
                 .build = [f](Graph&, Inputs in) { return scale(in[0], f); },
                 .torch = "x * " + py_float(f)});
  }
}

// An activation over several shapes, and its gradient kernel (no VJP) as the VJP applies it:
// relu_backward(x, gy), sigmoid_backward(sigmoid(x), gy), tanh_backward(tanh(x), gy).
struct Activation {
  const char* op;
  Value (*forward)(Value x);
  Value (*kernel)(Value x, Value gy);  // the gradient kernel, given the forward op's input
  CaseInput (*input)(Shape);
  const char* torch;  // a Python function
};

void add_activation_cases(Table& t, const Activation& a) {
  const auto fwd = a.forward;
  const auto kernel = a.kernel;
  for (const Shape& s : {Shape{3, 4}, Shape{2, 3, 4, 5}, Shape{1, 5, 1}}) {
    t.push_back({.op = a.op,
                 .name = shape_name(s),
                 .inputs = {a.input(s)},
                 .build = [fwd](Graph&, Inputs in) { return fwd(in[0]); },
                 .torch = std::string(a.torch) + "(x)"});
  }
  for (const Shape& s : {Shape{3, 5}, Shape{2, 3, 4, 5}}) {
    t.push_back({.op = std::string(a.op) + "_backward",
                 .name = shape_name(s),
                 .inputs = {a.input(s), uniform("gy", s)},
                 .build = [kernel](Graph&, Inputs in) { return kernel(in[0], in[1]); },
                 .torch = "vjp(" + std::string(a.torch) + ", x, gy)",
                 .gradient_of = [fwd](Graph&, Inputs in) { return fwd(in[0]); }});
  }
}

void add_activations(Table& t) {
  const Activation kActivations[] = {
      {"relu", [](Value x) { return relu(x); },
       [](Value x, Value gy) { return relu_backward(x, gy); },
       [](Shape s) { return away_from_zero("x", s); }, "torch.relu"},
      {"sigmoid", [](Value x) { return sigmoid(x); },
       [](Value x, Value gy) { return sigmoid_backward(sigmoid(x), gy); },
       [](Shape s) { return uniform("x", s, -3, 3); }, "torch.sigmoid"},
      {"tanh", [](Value x) { return tbgrad::tanh(x); },
       [](Value x, Value gy) { return tanh_backward(tbgrad::tanh(x), gy); },
       [](Shape s) { return uniform("x", s, -2, 2); }, "torch.tanh"},
  };
  for (const Activation& a : kActivations) add_activation_cases(t, a);
}

// ---------------------------------------------------------------------------------------------
// Softmax family
// ---------------------------------------------------------------------------------------------

void add_softmax_cases(Table& t) {
  struct Kind {
    const char* op;
    Value (*forward)(Value);
    Value (*backward)(Value, Value);
    const char* torch;  // a Python function of a tensor
  };
  const Kind kinds[] = {
      {"softmax", [](Value x) { return softmax(x); }, &softmax_backward,
       "lambda z: torch.softmax(z, -1)"},
      {"log_softmax", [](Value x) { return log_softmax(x); }, &log_softmax_backward,
       "lambda z: torch.log_softmax(z, -1)"},
  };
  for (const Kind& k : kinds) {
    auto fwd = k.forward;
    auto bwd = k.backward;
    // Along the last dimension of a matrix, a rank-3 tensor and a single element.
    for (const Shape& s : {Shape{4, 5}, Shape{2, 3, 4}, Shape{1, 1}}) {
      t.push_back({.op = k.op,
                   .name = shape_name(s),
                   .inputs = {uniform("x", s, -2, 2)},
                   .build = [fwd](Graph&, Inputs in) { return fwd(in[0]); },
                   .torch = "(" + std::string(k.torch) + ")(x)"});
    }
    for (const Shape& s : {Shape{3, 5}, Shape{2, 3, 4}, Shape{1, 1}}) {
      t.push_back({.op = std::string(k.op) + "_backward",
                   .name = shape_name(s),
                   .inputs = {uniform("x", s, -2, 2), uniform("gy", s)},
                   .build = [fwd, bwd](Graph&, Inputs in) { return bwd(fwd(in[0]), in[1]); },
                   .torch = "vjp(" + std::string(k.torch) + ", x, gy)",
                   .gradient_of = [fwd](Graph&, Inputs in) { return fwd(in[0]); }});
    }
  }
}

void add_cross_entropy_cases(Table& t) {
  // batch, classes: one class (the loss is 0), one row, more rows than classes and the reverse.
  for (const auto& [batch, classes] :
       {std::pair{1, 1}, std::pair{1, 2}, std::pair{1, 10}, std::pair{3, 5}, std::pair{4, 10},
        std::pair{7, 3}, std::pair{16, 1}, std::pair{32, 10}, std::pair{100, 7}}) {
    t.push_back(
        {.op = "softmax_cross_entropy",
         .name = "batch" + str(batch) + "_classes" + str(classes),
         .inputs = {uniform("logits", {batch, classes}, -3, 3), labels("labels", {batch}, classes)},
         .build = [](Graph&, Inputs in) { return softmax_cross_entropy(in[0], in[1]); },
         .torch = "F.cross_entropy(logits, labels)"});
  }
  // The gradient kernel takes the loss's gradient g, a scalar.
  const Builder kernel = [](Graph&, Inputs in) {
    return softmax_cross_entropy_backward(in[0], in[1], in[2]);
  };
  for (const auto& [batch, classes] : {std::pair{1, 4}, std::pair{5, 3}, std::pair{4, 10}}) {
    t.push_back(
        {.op = "softmax_cross_entropy_backward",
         .name = "batch" + str(batch) + "_classes" + str(classes),
         .inputs = {uniform("logits", {batch, classes}, -3, 3), labels("labels", {batch}, classes),
                    uniform("g", {}, -2, 2)},
         .build = kernel,
         .torch = "vjp(lambda z: F.cross_entropy(z, labels), logits, g)",
         .gradient_of = [](Graph&, Inputs in) { return softmax_cross_entropy(in[0], in[1]); }});
  }
}

// ---------------------------------------------------------------------------------------------
// Matrix products
// ---------------------------------------------------------------------------------------------

void add_matmul_cases(Table& t) {
  // Tiles of 4x4 and their remainders, K and N below, at and past whole vectors (16 floats,
  // 8 doubles), and the reference CNN's fc1 at batch 8; with every transpose combination.
  const std::tuple<int, int, int> kSizes[] = {{3, 4, 5},     {1, 7, 2},     {17, 33, 9},
                                              {64, 100, 10}, {8, 245, 100}, {5, 32, 16},
                                              {6, 40, 37},   {9, 16, 70}};
  for (const bool ta : {false, true}) {
    for (const bool tb : {false, true}) {
      for (const auto& [m, k, n] : kSizes) {
        const MatmulOptions o{.transpose_a = ta, .transpose_b = tb};
        t.push_back({.op = "matmul",
                     .name = std::string(ta ? "At" : "A") + "_" + (tb ? "Bt" : "B") + "_m" +
                             str(m) + "_k" + str(k) + "_n" + str(n),
                     .inputs = {uniform("a", ta ? Shape{k, m} : Shape{m, k}),
                                uniform("b", tb ? Shape{n, k} : Shape{k, n})},
                     .build = [o](Graph&, Inputs in) { return matmul(in[0], in[1], o); },
                     .torch = std::string(ta ? "a.T" : "a") + " @ " + (tb ? "b.T" : "b"),
                     .options = o});
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reductions, broadcasting and shape ops
// ---------------------------------------------------------------------------------------------

void add_sum_cases(Table& t) {
  // 10000 elements: more than one chunk of the deterministic reduction.
  for (const Shape& s : {Shape{}, Shape{7}, Shape{2, 3, 4}, Shape{100, 100}}) {
    t.push_back({.op = "sum",
                 .name = shape_name(s),
                 .inputs = {uniform("x", s)},
                 .build = [](Graph&, Inputs in) { return sum(in[0]); },
                 .torch = "x.sum()"});
  }
}

struct ReduceBroadcastPair {
  const char* name;
  Shape big, small;
};

const ReduceBroadcastPair kReduceBroadcastPairs[] = {
    {"LeadingDimension", {2, 3, 4}, {3, 4}},
    {"LeadingDimensionKept", {2, 3, 4}, {1, 3, 4}},
    {"LastDimension", {2, 3, 4}, {2, 3, 1}},
    {"MiddleDimension", {2, 3, 4}, {2, 1, 4}},
    {"ToScalar", {2, 3, 4}, {}},
    {"ToOnes", {2, 3, 4}, {1, 1, 1}},
    {"ChannelBias", {4, 3, 2, 5}, {3, 1, 1}},
    {"Rows", {5, 6}, {6}},
};

void add_sum_to_and_broadcast_to_cases(Table& t) {
  for (const ReduceBroadcastPair& p : kReduceBroadcastPairs) {
    const Shape big = p.big, small = p.small;
    t.push_back(
        {.op = "sum_to",
         .name = p.name,
         .inputs = {uniform("x", big)},
         .build = [small](Graph&, Inputs in) { return sum_to(in[0], small); },
         // sum_to_size keeps the rank it is given; () is the sum of everything.
         .torch = small.rank() == 0 ? "x.sum()" : "x.sum_to_size(" + py_shape(small) + ")"});
  }
  for (const ReduceBroadcastPair& p : kReduceBroadcastPairs) {
    const Shape big = p.big;
    t.push_back({.op = "broadcast_to",
                 .name = p.name,
                 .inputs = {uniform("x", p.small)},
                 .build = [big](Graph&, Inputs in) { return broadcast_to(in[0], big); },
                 .torch = "torch.broadcast_to(x, " + py_shape(big) + ")"});
  }
}

void add_reshape_cases(Table& t) {
  struct Row {
    const char* name;
    Shape in;
    Value (*fn)(Value);
    const char* torch;
  };
  Value (*const to_4_by_inferred)(Value) = [](Value x) { return reshape(x, {4, -1}); };
  Value (*const to_3_by_2)(Value) = [](Value x) { return reshape(x, {3, 2}); };
  const Row rows[] = {
      {"2x3x4_to_4xinferred", {2, 3, 4}, to_4_by_inferred, "x.reshape(4, -1)"},
      {"flatten_2x3x4x5", {2, 3, 4, 5}, [](Value x) { return flatten(x); }, "x.flatten(1)"},
      {"1x6x1_to_3x2", {1, 6, 1}, to_3_by_2, "x.reshape(3, 2)"},
  };
  for (const Row& r : rows) {
    const auto fn = r.fn;
    t.push_back({.op = "reshape",
                 .name = r.name,
                 .inputs = {uniform("x", r.in)},
                 .build = [fn](Graph&, Inputs in) { return fn(in[0]); },
                 .torch = r.torch});
  }
}

}  // namespace

void add_core_cases(Table& t) {
  add_binary_cases(t);
  add_scale_cases(t);
  add_activations(t);
  for (const PoolRow& r : kPoolRows) add_pool_cases(t, r);
  add_softmax_cases(t);
  add_cross_entropy_cases(t);
  add_sum_cases(t);
  add_sum_to_and_broadcast_to_cases(t);
  add_matmul_cases(t);
  for (const ConvRow& r : kConvRows) add_conv_cases(t, r);
  add_reshape_cases(t);
}

}  // namespace cases

namespace {

using cases::Table;

Table make_table() {
  Table t;
  cases::add_core_cases(t);
  cases::add_conv2_cases(t);
  cases::add_loss_cases(t);
  cases::add_bn_cases(t);
  cases::add_math_cases(t);
  cases::add_shape_cases(t);
  cases::add_norm_cases(t);
  cases::add_bmm_cases(t);
  // Grouped by op, in the order the ops first appear.
  std::vector<std::string> order;
  for (const OpCase& c : t) {
    if (std::find(order.begin(), order.end(), c.op) == order.end()) order.push_back(c.op);
  }
  std::stable_sort(t.begin(), t.end(), [&](const OpCase& a, const OpCase& b) {
    return std::find(order.begin(), order.end(), a.op) <
           std::find(order.begin(), order.end(), b.op);
  });
  return t;
}

}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> table = make_table();
  return table;
}

bool op_has_vjp(const std::string& op) {
  for (const OpInfo& info : registered_ops()) {
    if (info.name == op) return info.has_vjp;
  }
  return false;
}

std::uint64_t case_seed(const OpCase& c) {
  std::uint64_t h = 14695981039346656037ULL;  // FNV-1a
  for (const char ch : c.id()) {
    h ^= static_cast<unsigned char>(ch);
    h *= 1099511628211ULL;
  }
  return h;
}

std::vector<Tensor> make_inputs(const OpCase& c, DType dtype) {
  nn::Rng rng(case_seed(c));
  std::vector<Tensor> values;
  for (const CaseInput& in : c.inputs) {
    Tensor t(in.shape, in.is_float() ? dtype : DType::kI32);
    const std::int64_t n = t.numel();
    switch (in.kind) {
      case InputKind::kUniform:
        for (std::int64_t i = 0; i < n; ++i) t.set(i, rng.uniform(in.lo, in.hi));
        break;
      case InputKind::kAwayFromZero:
        for (std::int64_t i = 0; i < n; ++i) {
          const double magnitude = rng.uniform(0.1, 1.0);
          t.set(i, rng.below(2) ? magnitude : -magnitude);
        }
        break;
      case InputKind::kDistinct: {
        // 0.01 apart: a perturbation of 1e-6 cannot change a window's maximum.
        std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
        std::iota(perm.begin(), perm.end(), 0);
        for (std::int64_t i = n - 1; i > 0; --i) {
          const auto j = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(i + 1)));
          std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
        }
        for (std::int64_t i = 0; i < n; ++i) {
          t.set(i, (static_cast<double>(perm[static_cast<std::size_t>(i)]) - 0.5 * n) * 0.01);
        }
        break;
      }
      case InputKind::kLabels:
        for (std::int64_t i = 0; i < n; ++i) {
          t.set(i, static_cast<double>(rng.below(static_cast<std::uint64_t>(in.classes))));
        }
        break;
    }
    values.push_back(std::move(t));
  }
  return values;
}

Tensor random_tensor(const Shape& shape, DType dtype, std::uint64_t seed) {
  nn::Rng rng(seed);
  Tensor t(shape, dtype);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, rng.uniform(-1.0, 1.0));
  return t;
}

CaseGraph build_case(const OpCase& c, DType dtype) {
  CaseGraph cg{Graph(dtype), {}, {}};
  for (const CaseInput& in : c.inputs) {
    cg.inputs.push_back(in.is_float() ? cg.graph.input(in.name, in.shape)
                                      : cg.graph.input_labels(in.name, in.shape));
  }
  cg.out = c.build(cg.graph, cg.inputs);
  return cg;
}

}  // namespace tbgrad::testing
