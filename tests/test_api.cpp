// The calling forms of the public API that must keep compiling: the README's and the docs'
// snippets, the examples' and the public headers' documented uses, braced and designated
// initialisers included. A change that breaks one of them (an overload that makes a braced list
// ambiguous, a parameter type that no longer takes a vector) fails the build of this file, which
// includes only the umbrella header, as users do. Each test also runs its calls on a tiny graph
// and checks something that would differ if the call meant something else.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <tbgrad.hpp>
#include <utility>
#include <vector>

namespace {

using namespace tbgrad;

// ---------------------------------------------------------------- graphs and tensors

// A graph built by a function and returned with its Values (Graph is movable).
struct Built {
  Graph g;
  Value x, y;
};
Built build_scaled() {
  Built b;
  b.x = b.g.input("x", {2, 3});
  b.y = scale(b.x, 2.0);
  return b;
}

TEST(ApiGraph, LeavesAndTheirShapes) {
  Graph g;  // float32; Graph g(DType::kF64) for checks
  auto x = g.input("x", {32, 1, 28, 28});
  auto y = g.input_labels("y", {32});
  auto w = g.param("conv1.w", {3, 1, 5, 5});
  const std::int64_t batch = 4;
  auto z = g.input("z", {batch, 3}, DType::kF64);
  auto s = g.input("s", Shape{2, 3});
  Tensor storage({2, 3}, DType::kF32);
  storage.fill(0.5);
  auto shared = g.param("shared", storage);
  auto c = g.constant(Tensor(Shape{3}, DType::kF32));
  auto named = g.constant(storage, "half");
  auto two = g.scalar(2.0);
  EXPECT_EQ(x.shape(), (Shape{32, 1, 28, 28}));
  EXPECT_EQ(y.dtype(), DType::kI32);
  EXPECT_EQ(w.name(), "conv1.w");
  EXPECT_EQ(z.dtype(), DType::kF64);
  EXPECT_EQ(s.describe(), "s ([2,3])");
  EXPECT_EQ(g.value(shared).at(5), 0.5);  // shares `storage`
  EXPECT_EQ(c.shape(), (Shape{3}));
  EXPECT_EQ(g.value(named).raw(), storage.raw());
  EXPECT_EQ(two.shape().rank(), 0);
  EXPECT_EQ(g.params(), (std::vector<Value>{w, shared}));
  EXPECT_EQ(g.inputs().size(), 4U);
  EXPECT_EQ(g.find("conv1.w"), w);
  EXPECT_FALSE(g.find("nothing").valid());
  EXPECT_EQ(Graph(DType::kF64).dtype(), DType::kF64);
}

TEST(ApiGraph, AGraphReturnedFromAFunctionKeepsItsValues) {
  Built b = build_scaled();
  Tensor x({2, 3}, DType::kF32);
  x.fill(1.5);
  Executor run(b.g, {b.y});
  run.bind(b.x, x).run();
  EXPECT_EQ(run[b.y].at(4), 3.0);
}

TEST(ApiTensor, ConstructionAccessAndCopies) {
  Tensor t({2, 3}, DType::kF32);
  Tensor d(Shape{4}, DType::kF64);
  t.set(1, 2.5);
  t.span<float>()[2] = 4;
  t.data<float>()[3] = 1;
  EXPECT_EQ(t.at(1), 2.5);
  EXPECT_EQ(t.at(2), 4.0);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24U);
  Tensor copy = t.clone();
  t.fill(0);
  EXPECT_EQ(copy.at(3), 1.0);
  t.copy_from(copy);
  EXPECT_EQ(t.at(2), 4.0);
  float buffer[4] = {1, 2, 3, 4};
  Tensor view = Tensor::view({2, 2}, DType::kF32, buffer);
  EXPECT_EQ(view.at(3), 4.0);
  EXPECT_EQ(d.dtype(), DType::kF64);
  EXPECT_EQ(Shape({2, 3}).str(), "[2,3]");
  EXPECT_EQ((Shape{2, 3, 4}.numel()), 24);
  EXPECT_EQ(dtype_size(DType::kF64), 8U);
  EXPECT_STREQ(dtype_name(DType::kI32), "i32");
  static_assert(dtype_of<float>() == DType::kF32);
}

TEST(ApiGraph, AShapeMistakeIsAShapeErrorNamingTheOpAndTheShapes) {
  Graph g;
  auto x = g.input("x", {32, 1, 28, 28});
  auto w = g.param("w", {3, 2, 5, 5});
  try {
    conv2d(x, w);
    ADD_FAILURE() << "expected a ShapeError";
  } catch (const ShapeError& e) {  // also a tbgrad::Error
    EXPECT_NE(std::string(e.what()).find("conv2d: weight expects 2 input channels, input x "
                                         "([32,1,28,28]) has 1"),
              std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------- ops

TEST(ApiOps, ElementwiseReductionsAndShapes) {
  Graph g;
  Value a = g.input("a", {2, 3});
  Value b = g.input("b", {3});
  EXPECT_EQ(add(a, b).shape(), (Shape{2, 3}));  // broadcasting
  EXPECT_EQ(sub(a, b).shape(), (Shape{2, 3}));
  EXPECT_EQ(mul(a, a).shape(), (Shape{2, 3}));
  EXPECT_EQ(scale(a, 0.5).shape(), (Shape{2, 3}));
  EXPECT_EQ(relu(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(sigmoid(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(tanh(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(tbgrad::exp(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(tbgrad::log(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(tbgrad::sqrt(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(rsqrt(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(neg(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(tbgrad::abs(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(tbgrad::pow(a, 2.0).shape(), (Shape{2, 3}));
  EXPECT_EQ(clamp(a, -1.0, 1.0).shape(), (Shape{2, 3}));
  EXPECT_EQ(leaky_relu(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(leaky_relu(a, 0.2).shape(), (Shape{2, 3}));
  EXPECT_EQ(gelu(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(gelu(a, GeluApproximation::kTanh).shape(), (Shape{2, 3}));
  EXPECT_EQ(silu(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(softplus(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(softplus(a, 2.0, 10.0).shape(), (Shape{2, 3}));
  EXPECT_EQ(tbgrad::div(a, b).shape(), (Shape{2, 3}));  // broadcasting
  EXPECT_EQ(maximum(a, b).shape(), (Shape{2, 3}));
  EXPECT_EQ(minimum(b, a).shape(), (Shape{2, 3}));
  EXPECT_EQ(maximum_grad_share(a, b).shape(), (Shape{2, 3}));
  EXPECT_EQ(where(g.input("mask", {2, 1}, DType::kI32), a, b).shape(), (Shape{2, 3}));
  EXPECT_EQ(softmax(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(log_softmax(a).shape(), (Shape{2, 3}));
  EXPECT_EQ(sum(a).shape(), Shape{});
  EXPECT_EQ(mean(a).shape(), Shape{});
  EXPECT_EQ(sum_to(a, {1, 3}).shape(), (Shape{1, 3}));
  EXPECT_EQ(sum_to(a, Shape{3}).shape(), (Shape{3}));
  EXPECT_EQ(broadcast_to(b, {4, 3}).shape(), (Shape{4, 3}));
  EXPECT_EQ(broadcast_shapes("add", a, b), (Shape{2, 3}));
  // reshape: {2, -1} is a list of dimensions, one inferred, not a Shape (which has no -1).
  EXPECT_EQ(reshape(a, {2, -1}).shape(), (Shape{2, 3}));
  EXPECT_EQ(reshape(a, {3, -1}).shape(), (Shape{3, 2}));
  EXPECT_EQ(reshape(a, {-1}).shape(), (Shape{6}));
  EXPECT_EQ(reshape(a, Shape{6, 1}).shape(), (Shape{6, 1}));
  EXPECT_EQ(flatten(g.input("img", {2, 1, 4, 4})).shape(), (Shape{2, 16}));
  Value labels = g.input_labels("labels", {2});
  EXPECT_EQ(softmax_cross_entropy(a, labels).shape(), Shape{});
}

TEST(ApiOps, MatmulAndLinear) {
  Graph g;
  Value x = g.input("x", {4, 3});
  Value w = g.param("w", {2, 3});
  Value c = g.param("c", {2});
  EXPECT_EQ(matmul(x, g.input("b", {3, 5})).shape(), (Shape{4, 5}));
  EXPECT_EQ(matmul(x, w, {.transpose_b = true}).shape(), (Shape{4, 2}));
  EXPECT_EQ(matmul(w, x, {false, true}).shape(), (Shape{2, 4}));
  EXPECT_EQ(matmul(x, x, {.transpose_a = true}).shape(), (Shape{3, 3}));
  const MatmulOptions both{.transpose_a = true, .transpose_b = true};
  EXPECT_EQ(matmul(x, g.input("bt", {5, 4}), both).shape(), (Shape{3, 5}));
  EXPECT_EQ(linear(x, w, c).shape(), (Shape{4, 2}));  // with a bias
  EXPECT_EQ(linear(x, w).shape(), (Shape{4, 2}));     // without
  // Batched (torch.matmul): the batch axes broadcast, the flags swap the last two axes.
  Value q = g.input("q", {2, 3, 5, 4});
  EXPECT_EQ(matmul(q, q, {.transpose_b = true}).shape(), (Shape{2, 3, 5, 5}));
  EXPECT_EQ(matmul(g.input("s", {2, 1, 3, 4}), g.input("t", {5, 4, 2})).shape(),
            (Shape{2, 5, 3, 2}));
  EXPECT_EQ(matmul(q, g.input("m", {4, 6})).shape(), (Shape{2, 3, 5, 6}));
  EXPECT_EQ(matmul(x, g.input("r", {2, 4, 6}), {.transpose_a = true}).shape(), (Shape{2, 3, 6}));
}

TEST(ApiOps, ReductionsOverAxes) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  // The all-elements forms keep compiling and meaning what they meant.
  EXPECT_EQ(sum(x).shape(), Shape{});
  EXPECT_EQ(mean(x).shape(), Shape{});
  // Braced lists of axes, negative ones, keepdims.
  EXPECT_EQ(sum(x, {1}).shape(), (Shape{2, 4}));
  EXPECT_EQ(sum(x, {0, 2}, true).shape(), (Shape{1, 3, 1}));
  EXPECT_EQ(sum(x, {-1}).shape(), (Shape{2, 3}));
  EXPECT_EQ(mean(x, {0, -1}).shape(), (Shape{3}));
  EXPECT_EQ(mean(x, {1}, true).shape(), (Shape{2, 1, 4}));
  EXPECT_EQ(max(x, {2}).shape(), (Shape{2, 3}));
  EXPECT_EQ(max(x, {0, 1, 2}, true).shape(), (Shape{1, 1, 1}));
  EXPECT_EQ(var(x, {1}).shape(), (Shape{2, 4}));         // correction 1 (unbiased)
  EXPECT_EQ(var(x, {1}, 0).shape(), (Shape{2, 4}));      // correction 0 (biased)
  EXPECT_EQ(var(x, {1}, false, true).shape(), (Shape{2, 1, 4}));  // torch's unbiased flag
  EXPECT_EQ(sum(x, {}).shape(), Shape{});                // an empty list: every axis
  const std::vector<int> axes{0, 1};
  EXPECT_EQ(sum(x, axes).shape(), (Shape{4}));
  Value y = max(x, {1});
  EXPECT_EQ(max_backward(x, y, y, {1}).shape(), x.shape());
}

TEST(ApiOps, PermuteConcatSliceSplitPad) {
  Graph g;
  Value x = g.input("x", {2, 3, 4, 5});
  EXPECT_EQ(permute(x, {0, 2, 3, 1}).shape(), (Shape{2, 4, 5, 3}));
  EXPECT_EQ(permute(x, {-1, 0, 1, 2}).shape(), (Shape{5, 2, 3, 4}));
  EXPECT_EQ(transpose(x, 1, -1).shape(), (Shape{2, 5, 4, 3}));
  Value y = g.input("y", {2, 1, 4, 5});
  EXPECT_EQ(concat({x, y}, 1).shape(), (Shape{2, 4, 4, 5}));
  const std::vector<Value> parts{x, y, x};
  EXPECT_EQ(concat(parts, -3).shape(), (Shape{2, 7, 4, 5}));
  const std::array<Value, 2> two{x, x};
  EXPECT_EQ(concat(two, 0).shape(), (Shape{4, 3, 4, 5}));  // a span
  EXPECT_EQ(slice(x, 1, 1, 3).shape(), (Shape{2, 2, 4, 5}));
  EXPECT_EQ(slice(x, -1, 0, 5, 2).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(slice(x, 2, -2, 100).shape(), (Shape{2, 3, 2, 5}));
  const std::vector<Value> split3 = split(x, {1, 2}, 1);
  ASSERT_EQ(split3.size(), 2U);
  EXPECT_EQ(split3[1].shape(), (Shape{2, 2, 4, 5}));
  EXPECT_EQ(split(x, {2, 2, 1}, -1)[2].shape(), (Shape{2, 3, 4, 1}));
  EXPECT_EQ(pad(x, {1, 1}).shape(), (Shape{2, 3, 4, 7}));
  EXPECT_EQ(pad(x, {1, 1, 2, 0}, 0.5).shape(), (Shape{2, 3, 6, 7}));
  Value gamma = g.param("gamma", {3});
  EXPECT_EQ(per_channel(gamma, x).shape(), (Shape{3, 1, 1}));
  EXPECT_EQ(mul(x, per_channel(gamma, x)).shape(), x.shape());
  EXPECT_EQ(sum_to(x, {3, 1, 1}).shape(), (Shape{3, 1, 1}));
  EXPECT_EQ(sum_to(x, {1, 3, 1, 1}).shape(), (Shape{1, 3, 1, 1}));
  Value gs = g.input("gs", {2, 2, 4, 5});
  EXPECT_EQ(slice_backward(gs, x.shape(), 1, 1, 3).shape(), x.shape());
}

TEST(ApiOps, GradientKernels) {
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 2, 4, 4});
  Value w = g.param("w", {3, 2, 3, 3});
  Value gy = g.input("gy", {1, 3, 2, 2});
  EXPECT_EQ(conv2d_backward_input(gy, w, x.shape(), {}).shape(), (Shape{1, 2, 4, 4}));
  EXPECT_EQ(conv2d_backward_weight(x, gy, w.shape(), {.stride = 1}).shape(), (Shape{3, 2, 3, 3}));
  EXPECT_EQ(conv2d_backward_bias(gy).shape(), (Shape{3}));
  Value gp = g.input("gp", {1, 2, 2, 2});
  EXPECT_EQ(avg_pool2d_backward(gp, x.shape(), {.kernel = 2}).shape(), (Shape{1, 2, 4, 4}));
  EXPECT_EQ(max_pool2d_backward(x, gp, {.kernel = 2}).shape(), (Shape{1, 2, 4, 4}));
  EXPECT_EQ(relu_backward(x, x).shape(), x.shape());
  EXPECT_EQ(sigmoid_backward(x, x).shape(), x.shape());
  EXPECT_EQ(tanh_backward(x, x).shape(), x.shape());
  EXPECT_EQ(exp_backward(x, x).shape(), x.shape());
  EXPECT_EQ(log_backward(x, x).shape(), x.shape());
  EXPECT_EQ(sqrt_backward(x, x).shape(), x.shape());
  EXPECT_EQ(rsqrt_backward(x, x).shape(), x.shape());
  EXPECT_EQ(abs_backward(x, x).shape(), x.shape());
  EXPECT_EQ(pow_backward(x, x, 2.0).shape(), x.shape());
  EXPECT_EQ(clamp_backward(x, x, -1.0, 1.0).shape(), x.shape());
  EXPECT_EQ(leaky_relu_backward(x, x).shape(), x.shape());
  EXPECT_EQ(gelu_backward(x, x, GeluApproximation::kTanh).shape(), x.shape());
  EXPECT_EQ(silu_backward(x, x).shape(), x.shape());
  EXPECT_EQ(softplus_backward(x, x).shape(), x.shape());
  EXPECT_EQ(gelu_double_backward(x, x).shape(), x.shape());
  EXPECT_EQ(silu_double_backward(x, x).shape(), x.shape());
  EXPECT_EQ(softplus_double_backward(x, x, 2.0, 10.0).shape(), x.shape());
  Value s = g.input("s", {2, 3});
  Value labels = g.input_labels("labels", {2});
  EXPECT_EQ(softmax_backward(s, s).shape(), (Shape{2, 3}));
  EXPECT_EQ(log_softmax_backward(s, s).shape(), (Shape{2, 3}));
  EXPECT_EQ(softmax_cross_entropy_backward(s, labels, g.scalar(1)).shape(), (Shape{2, 3}));
}

TEST(ApiOps, EveryOpIsRegistered) {
  bool conv = false;
  for (const OpInfo& op : registered_ops()) conv = conv || (op.name == "conv2d" && op.has_vjp);
  EXPECT_TRUE(conv);
}

// ---------------------------------------------------------------- grad and the executor

TEST(ApiGrad, ListsSpansAndOneValue) {
  Graph g;
  Value x = g.input("x", {4, 3});
  Value w = g.param("w", {2, 3});
  Value b = g.param("b", {2});
  Value loss = mean(linear(x, w, b));
  EXPECT_EQ(grad(loss, g.params()).size(), 2U);
  EXPECT_EQ(grad(loss, {w, b}).size(), 2U);
  const std::vector<Value> params = g.params();
  EXPECT_EQ(grad(loss, std::span<const Value>(params)).size(), 2U);
  EXPECT_EQ(grad(loss, w).shape(), (Shape{2, 3}));
}

// The README's graph API, on a tiny network: one SGD step lowers the loss.
TEST(ApiExecutor, TheReadmeTrainingStep) {
  Graph g;
  auto x = g.input("x", {4, 1, 6, 6});
  auto y = g.input_labels("y", {4});
  auto w1 = g.param("conv1.w", {2, 1, 3, 3});
  auto b1 = g.param("conv1.b", {2});
  auto f1 = g.param("fc1.w", {3, 8});
  auto c1 = g.param("fc1.b", {3});
  auto h = relu(conv2d(x, w1, b1, {.stride = 1, .padding = 0}));  // [4, 2, 4, 4]
  h = avg_pool2d(h, {.kernel = 2, .stride = 2});                  // [4, 2, 2, 2]
  auto logits = linear(flatten(h), f1, c1);                       // [4, 3]
  auto loss = softmax_cross_entropy(logits, y);
  nn::Rng rng(7);
  for (Value p : g.params()) nn::uniform(g.value(p), -0.5, 0.5, rng);

  auto grads = grad(loss, g.params());
  Executor run(g, {loss, grads});
  std::vector<Tensor> params, grad_values;
  for (Value p : g.params()) params.push_back(g.value(p));
  for (Value gv : grads) grad_values.push_back(run[gv]);
  nn::SGD sgd(params, 0.5);
  Tensor batch({4, 1, 6, 6}, DType::kF32), labels({4}, DType::kI32);
  nn::uniform(batch, 0, 1, rng);
  for (int i = 0; i < 4; ++i) labels.set(i, i % 3);
  run.bind(x, batch).bind(y, labels).run();
  const double before = run[loss].at(0);
  sgd.step(grad_values);
  run.run();
  EXPECT_LT(run[loss].at(0), before);
  EXPECT_EQ(run.get(x).raw(), batch.raw());
}

TEST(ApiExecutor, OutputListsAndOptions) {
  Graph g;
  Value x = g.input("x", {2, 3});
  Value w = g.param("w", {3});
  Value y = relu(mul(x, w));
  Value loss = sum(y);
  std::vector<Value> grads = grad(loss, g.params());
  Tensor xv({2, 3}, DType::kF32);
  xv.fill(1);
  g.value(w).fill(2);

  auto check = [&](Executor& run) {
    run.bind(x, xv).run();
    EXPECT_EQ(run[loss].at(0), 12.0);
  };
  Executor a(g, {loss, grads});
  check(a);
  Executor b(g, {loss});
  check(b);
  Executor c(g, {loss, y}, {.fuse = false});
  check(c);
  EXPECT_EQ(c.num_fused(), 0);
  const std::vector<Value> outputs = {loss, y};
  Executor d(g, outputs);
  check(d);
  Executor e(g, std::span<const Value>(outputs), ExecutorOptions{.fuse = true});
  check(e);
  auto f = make_executor(g, {loss, grads});
  check(*f);
  EXPECT_EQ(f->outputs().size(), 2U);
  EXPECT_EQ((*f)[grads[0]].at(0), 2.0);  // d sum(relu(x * w)) / d w[0] = x[0, 0] + x[1, 0]
  f->set_profiling(true);
  f->run();
  EXPECT_FALSE(f->profile().empty());
  EXPECT_GT(f->arena_bytes(), 0U);
  EXPECT_GE(f->unplanned_bytes(), f->arena_bytes());
  EXPECT_GT(f->num_steps(), 0);
}

TEST(ApiThreads, CountsScopesAndArenas) {
  const int before = configured_num_threads();
  {
    ThreadScope scope(2);
    EXPECT_EQ(num_threads(), 2);
    int calls = 0;
    run_in_arena([&] { ++calls; });
    EXPECT_EQ(calls, 1);
  }
  EXPECT_EQ(configured_num_threads(), before);
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  set_num_threads(before);
  EXPECT_FALSE(supported_isas().empty());
  EXPECT_FALSE(known_isas().empty());
  const std::string target = isa();
  set_max_isa(target);  // a cap at the target in use changes nothing
  EXPECT_EQ(isa(), target);

  std::vector<int> hits(100, 0);
  parallel_for(100, 10, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) ++hits[static_cast<std::size_t>(i)];
  });
  EXPECT_EQ(std::count(hits.begin(), hits.end(), 1), 100);
  EXPECT_EQ(fixed_chunks(100, 32), 4);
}

// ---------------------------------------------------------------- gradcheck

// The names gradcheck reported, in order, after checking that it passed and that it compared
// `checked` elements of each (0: all of them).
std::vector<std::string> checked_names(const GradcheckResult& r, std::int64_t checked = 0) {
  EXPECT_TRUE(r.ok) << r.report();
  std::vector<std::string> names;
  for (const GradcheckInputResult& in : r.inputs) {
    names.push_back(in.name);
    EXPECT_EQ(in.checked, checked ? checked : in.shape.numel()) << in.name;
  }
  return names;
}

// loss = mean(tanh(x wᵀ + b)) on a float64 graph, with x fed.
struct GradcheckGraph {
  Graph g{DType::kF64};
  Value w = g.param("w", {2, 3});
  Value b = g.param("b", {2});
  Value x = g.input("x", {4, 3});
  Value loss = mean(tanh(linear(x, w, b)));
  Tensor xv{Shape{4, 3}, DType::kF64};

  GradcheckGraph() {
    nn::Rng rng(3);
    nn::uniform(g.value(w), -1, 1, rng);
    nn::uniform(g.value(b), -1, 1, rng);
    nn::uniform(xv, -1, 1, rng);
  }
};

TEST(ApiGradcheck, TheReadmeSnippet) {
  Graph g(DType::kF64);
  auto w = g.param("w", {2, 3});
  auto x = g.input("x", {4, 3});
  Tensor x_values({4, 3}, DType::kF64);
  x_values.fill(0.25);
  g.value(w).fill(0.5);
  auto result = gradcheck(mean(tanh(linear(x, w))), {w}, {{x, x_values}});
  EXPECT_TRUE(result.ok) << result.report();
  EXPECT_TRUE(result.reentrant);
  EXPECT_NE(result.report().find("gradcheck passed"), std::string::npos);
}

TEST(ApiGradcheck, BracedListsOfValuesAndOfFeeds) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w, t.b}, {{t.x, t.xv}})), wb);  // the README's
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w}, {{t.x, t.xv}})), std::vector<std::string>{"w"});
}

TEST(ApiGradcheck, AVectorOfValuesWithABracedListOfFeeds) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  EXPECT_EQ(checked_names(gradcheck(t.loss, t.g.params(), {{t.x, t.xv}})), wb);
  const std::vector<Value> params = t.g.params();
  EXPECT_EQ(checked_names(gradcheck(t.loss, params, {{t.x, t.xv}})), wb);
}

TEST(ApiGradcheck, SpansAndArraysOfValues) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  std::vector<Value> params = t.g.params();
  EXPECT_EQ(checked_names(gradcheck(t.loss, std::span<const Value>(params), {{t.x, t.xv}})), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, std::span<Value>(params), {{t.x, t.xv}})), wb);
  const std::array<Value, 2> array = {t.b, t.w};
  EXPECT_EQ(checked_names(gradcheck(t.loss, array, {{t.x, t.xv}})),
            (std::vector<std::string>{"b", "w"}));
}

TEST(ApiGradcheck, FeedsAsAVectorOrASpan) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  const std::vector<std::pair<Value, Tensor>> feeds = {{t.x, t.xv}};
  const std::span<const std::pair<Value, Tensor>> feed_span(feeds);
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w, t.b}, feeds)), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, t.g.params(), feeds)), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w, t.b}, feed_span)), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, std::span<const Value>(t.g.params()), feed_span)), wb);
}

TEST(ApiGradcheck, AnInputInWrtIsCheckedThroughItsFeed) {
  GradcheckGraph t;
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.x, t.w}, {{t.x, t.xv}})),
            (std::vector<std::string>{"x", "w"}));
}

TEST(ApiGradcheck, WithoutFeeds) {
  Graph g(DType::kF64);
  Value w = g.param("w", {2, 3});
  Value loss = sum(tanh(w));
  const std::vector<std::string> names = {"w"};
  EXPECT_EQ(checked_names(gradcheck(loss, {w})), names);
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, {})), names);
  EXPECT_EQ(checked_names(gradcheck(loss, g.params())), names);
  EXPECT_EQ(checked_names(gradcheck(loss, std::span<const Value>(g.params()))), names);
}

TEST(ApiGradcheck, WithOptions) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  const std::vector<std::pair<Value, Tensor>> feeds = {{t.x, t.xv}};
  GradcheckOptions options;
  options.max_elements_per_input = 2;
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w, t.b}, {{t.x, t.xv}}, options), 2), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, t.g.params(), feeds, options), 2), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, t.g.params(), {{t.x, t.xv}},
                                    {.rtol = 1e-3, .max_elements_per_input = 1}),
                          1),
            wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, std::span<const Value>(t.g.params()),
                                    std::span<const std::pair<Value, Tensor>>(feeds), options),
                          2),
            wb);

  Graph g(DType::kF64);
  Value w = g.param("w", {2, 3});
  Value loss = sum(tanh(w));
  const std::vector<std::string> names = {"w"};
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, options), 2), names);
  EXPECT_EQ(checked_names(gradcheck(loss, g.params(), options), 2), names);
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, {}, options), 2), names);
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, {}, {.max_elements_per_input = 3}), 3), names);
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, GradcheckOptions{.max_elements_per_input = 1}), 1),
            names);
}

// ---------------------------------------------------------------- pooling and convolution

TEST(ApiPooling, ABracedListIsPool2dOptionsInOrder) {
  Graph g;
  Value x = g.input("x", {2, 3, 8, 6});
  // {2}: kernel 2, stride = kernel; {2, 1}: kernel 2, stride 1; {2, 1, 1}: and padding 1.
  EXPECT_EQ(max_pool2d(x, {2}).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(avg_pool2d(x, {2}).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(max_pool2d(x, {2, 1}).shape(), (Shape{2, 3, 7, 5}));
  EXPECT_EQ(avg_pool2d(x, {2, 1}).shape(), (Shape{2, 3, 7, 5}));
  EXPECT_EQ(max_pool2d(x, {2, 1, 1}).shape(), (Shape{2, 3, 9, 7}));
  EXPECT_EQ(avg_pool2d(x, {{2, 3}, {1, 2}}).shape(), (Shape{2, 3, 7, 2}));
}

TEST(ApiPooling, DesignatedOptions) {
  Graph g;
  Value x = g.input("x", {2, 3, 8, 6});
  EXPECT_EQ(max_pool2d(x, {.kernel = 2}).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(max_pool2d(x, {.kernel = 2, .stride = 1}).shape(), (Shape{2, 3, 7, 5}));
  EXPECT_EQ(avg_pool2d(x, {.kernel = 4, .stride = 2}).shape(), (Shape{2, 3, 3, 2}));  // README
  EXPECT_EQ(avg_pool2d(x, {.kernel = 3, .stride = 1, .padding = 1}).shape(), (Shape{2, 3, 8, 6}));
  EXPECT_EQ(avg_pool2d(x, {.kernel = {2, 3}, .stride = {1, 3}}).shape(), (Shape{2, 3, 7, 2}));
  const Pool2dOptions options{.kernel = 2, .stride = 1};
  EXPECT_EQ(max_pool2d(x, options).shape(), (Shape{2, 3, 7, 5}));
}

TEST(ApiPooling, AKernelSizeAloneHasTheStrideOfTheKernel) {
  Graph g;
  Value x = g.input("x", {2, 3, 8, 6});
  EXPECT_EQ(max_pool2d(x, 2).shape(), (Shape{2, 3, 4, 3}));  // the README's custom_cnn
  EXPECT_EQ(avg_pool2d(x, 2).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(max_pool2d(x, Pair2{2, 3}).shape(), (Shape{2, 3, 4, 2}));
  EXPECT_EQ(avg_pool2d(x, Pair2{2, 3}).shape(), (Shape{2, 3, 4, 2}));
  const std::int64_t k = 2;
  EXPECT_EQ(max_pool2d(x, k).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(avg_pool2d(x, 2U).shape(), (Shape{2, 3, 4, 3}));
}

TEST(ApiConv2d, WithAndWithoutBiasAndOptions) {
  Graph g;
  Value x = g.input("x", {2, 1, 6, 6});
  Value w = g.param("w", {4, 1, 3, 3});
  Value b = g.param("b", {4});
  EXPECT_EQ(conv2d(x, w, b, {.stride = 1, .padding = 0}).shape(), (Shape{2, 4, 4, 4}));  // README
  EXPECT_EQ(conv2d(x, w, b).shape(), (Shape{2, 4, 4, 4}));
  EXPECT_EQ(conv2d(x, w).shape(), (Shape{2, 4, 4, 4}));
  EXPECT_EQ(conv2d(x, w, {.padding = 1}).shape(), (Shape{2, 4, 6, 6}));  // the README's custom_cnn
  EXPECT_EQ(conv2d(x, w, b, {.padding = 1}).shape(), (Shape{2, 4, 6, 6}));
  EXPECT_EQ(conv2d(x, w, {.stride = 2}).shape(), (Shape{2, 4, 2, 2}));
  EXPECT_EQ(conv2d(x, w, b, {.stride = {1, 2}, .padding = {1, 0}}).shape(), (Shape{2, 4, 6, 2}));
  // In order: {stride} and {stride, padding}.
  EXPECT_EQ(conv2d(x, w, {2}).shape(), (Shape{2, 4, 2, 2}));
  EXPECT_EQ(conv2d(x, w, b, {1, 1}).shape(), (Shape{2, 4, 6, 6}));
  const Conv2dOptions options{.stride = 1, .padding = 1};
  EXPECT_EQ(conv2d(x, w, options).shape(), (Shape{2, 4, 6, 6}));
  EXPECT_EQ(conv2d(x, w, Value(), options).shape(), (Shape{2, 4, 6, 6}));  // no bias
}

TEST(ApiConv2d, GroupsAndDilation) {
  Graph g;
  Value x = g.input("x", {2, 4, 9, 9});
  Value dw = g.param("dw", {4, 1, 3, 3});   // depthwise: [C, 1, KH, KW]
  Value dw2 = g.param("dw2", {8, 1, 3, 3});  // channel multiplier 2
  Value gw = g.param("gw", {6, 2, 3, 3});   // groups 2: [OC, IC/2, KH, KW]
  Value w = g.param("w", {3, 4, 3, 3});
  Value b = g.param("b", {4});
  EXPECT_EQ(conv2d(x, dw, b, {.padding = 1, .groups = 4}).shape(), (Shape{2, 4, 9, 9}));
  EXPECT_EQ(conv2d(x, dw2, {.stride = 2, .padding = 1, .groups = 4}).shape(), (Shape{2, 8, 5, 5}));
  EXPECT_EQ(conv2d(x, gw, {.groups = 2}).shape(), (Shape{2, 6, 7, 7}));
  // Dilation 2 spans 5x5: 9 - 5 + 1 = 5; with padding 2, 9.
  EXPECT_EQ(conv2d(x, w, {.dilation = 2}).shape(), (Shape{2, 3, 5, 5}));
  EXPECT_EQ(conv2d(x, w, {.padding = 2, .dilation = 2}).shape(), (Shape{2, 3, 9, 9}));
  EXPECT_EQ(conv2d(x, w, {.dilation = {3, 1}}).shape(), (Shape{2, 3, 3, 7}));
  // In order: {stride, padding, dilation, groups}.
  EXPECT_EQ(conv2d(x, gw, {1, 1, 2, 2}).shape(), (Shape{2, 6, 7, 7}));
  const Conv2dOptions options{.stride = 1, .padding = 1, .dilation = 1, .groups = 4};
  EXPECT_EQ(conv2d(x, dw, b, options).shape(), (Shape{2, 4, 9, 9}));
  // The gradient kernels take the same options.
  Value gy = g.input("gy", {2, 6, 7, 7});
  EXPECT_EQ(conv2d_backward_input(gy, gw, x.shape(), {.groups = 2}).shape(), x.shape());
  EXPECT_EQ(conv2d_backward_weight(x, gy, gw.shape(), {.groups = 2}).shape(), gw.shape());
}

TEST(ApiConv2d, TransposedConvolution) {
  Graph g;
  Value x = g.input("x", {2, 4, 5, 5});
  Value w = g.param("w", {4, 3, 3, 3});  // [IC, OC/groups, KH, KW]
  Value wg = g.param("wg", {4, 1, 3, 3});
  Value b = g.param("b", {3});
  // (H-1)*s - 2p + d*(k-1) + output_padding + 1
  EXPECT_EQ(conv_transpose2d(x, w).shape(), (Shape{2, 3, 7, 7}));
  EXPECT_EQ(conv_transpose2d(x, w, b).shape(), (Shape{2, 3, 7, 7}));
  EXPECT_EQ(conv_transpose2d(x, w, b, {.stride = 2, .padding = 1, .output_padding = 1}).shape(),
            (Shape{2, 3, 10, 10}));
  EXPECT_EQ(conv_transpose2d(x, w, {.stride = {2, 1}, .dilation = 2}).shape(),
            (Shape{2, 3, 13, 9}));
  EXPECT_EQ(conv_transpose2d(x, wg, {.groups = 2}).shape(), (Shape{2, 2, 7, 7}));
  EXPECT_EQ(conv_transpose2d(x, wg, {.groups = 4}).shape(), (Shape{2, 4, 7, 7}));
  // In order: {stride, padding, output_padding, groups, dilation}, as F.conv_transpose2d.
  EXPECT_EQ(conv_transpose2d(x, w, b, {2, 1, 1}).shape(), (Shape{2, 3, 10, 10}));
  const ConvTranspose2dOptions options{.stride = 2, .output_padding = 1};
  EXPECT_EQ(conv_transpose2d(x, w, Value(), options).shape(), (Shape{2, 3, 12, 12}));
}

TEST(ApiPooling, GlobalPools) {
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3, 4, 5});
  Value avg = global_avg_pool2d(x);
  Value max = global_max_pool2d(x);
  EXPECT_EQ(avg.shape(), (Shape{2, 3, 1, 1}));
  EXPECT_EQ(max.shape(), (Shape{2, 3, 1, 1}));
  EXPECT_EQ(global_max_pool2d_backward(x, max).shape(), x.shape());
  Tensor xv({2, 3, 4, 5}, DType::kF64);
  for (std::int64_t i = 0; i < xv.numel(); ++i) xv.set(i, static_cast<double>((i * 7) % 20));
  Executor ex(g, {avg, max});
  ex.bind(x, xv).run();
  for (std::int64_t p = 0; p < 6; ++p) {
    double sum = 0, best = -1;
    for (std::int64_t i = 0; i < 20; ++i) {
      sum += xv.at(p * 20 + i);
      best = std::max(best, xv.at(p * 20 + i));
    }
    EXPECT_DOUBLE_EQ(ex[avg].at(p), sum / 20) << p;
    EXPECT_EQ(ex[max].at(p), best) << p;
  }
}

// The direct kernels of grouped and dilated convolutions, the transposed convolution and the
// global pools give the same bits at every thread count (Note [Determinism]).
TEST(ApiThreads, GroupedDilatedTransposedAndGlobalOpsAreBitIdenticalForAnyThreadCount) {
  auto run = [](int threads) {
    ThreadScope scope(threads);
    Graph g;
    Value x = g.input("x", {6, 8, 21, 19});
    Value dw = g.input("dw", {8, 1, 3, 3});
    Value gw = g.input("gw", {12, 4, 3, 3});
    Value tw = g.input("tw", {12, 2, 4, 4});
    Value h = relu(conv2d(x, dw, {.padding = 2, .dilation = 2, .groups = 8}));
    Value k = conv2d(h, gw, {.stride = 2, .padding = 1, .groups = 2});
    Value t = conv_transpose2d(k, tw, {.stride = 2, .padding = 1, .groups = 2});
    Value loss = sum(add(global_avg_pool2d(t), global_max_pool2d(t)));
    std::vector<Value> wanted = grad(loss, {x, dw, gw, tw});
    wanted.push_back(loss);
    Executor ex(g, wanted);
    std::uint64_t seed = 1;
    std::vector<Tensor> values;
    values.reserve(4);
    for (Value v : {x, dw, gw, tw}) {
      Tensor tv(v.shape(), DType::kF32);
      for (std::int64_t i = 0; i < tv.numel(); ++i) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        tv.set(i, static_cast<double>(seed >> 40) / static_cast<double>(1 << 24) - 0.5);
      }
      values.push_back(tv);
      ex.bind(v, values.back());
    }
    ex.run();
    std::vector<std::vector<float>> out;
    for (Value v : wanted) {
      const float* p = ex[v].data<float>();
      out.emplace_back(p, p + ex[v].numel());
    }
    return out;
  };
  const auto one = run(1);
  for (int threads : {2, 3}) {
    const auto many = run(threads);
    ASSERT_EQ(many.size(), one.size());
    for (std::size_t i = 0; i < one.size(); ++i) {
      EXPECT_EQ(std::memcmp(many[i].data(), one[i].data(), one[i].size() * sizeof(float)), 0)
          << "output " << i << " differs with " << threads << " threads";
    }
  }
}

// ---------------------------------------------------------------- the training library

constexpr int kRows = 4, kCols = 4, kClasses = 3;

// A ModelFn as a function: conv -> relu -> max-pool -> linear, on [B, 1, 4, 4] images.
nn::ModelGraph tiny_cnn(Graph& g, nn::ParamStore& p, std::int64_t batch) {
  nn::ModelGraph m;
  m.inputs = g.input("images", {batch, 1, kRows, kCols});
  m.labels = g.input_labels("labels", {batch});
  auto h = relu(conv2d(m.inputs, p.param(g, "conv1.w", {2, 1, 3, 3}), p.param(g, "conv1.b", {2}),
                       {.padding = 1}));  // [B, 2, 4, 4]
  h = flatten(max_pool2d(h, 2));          // [B, 8]
  m.outputs = linear(h, p.param(g, "fc.w", {kClasses, 8}), p.param(g, "fc.b", {kClasses}));
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

data::Dataset tiny_dataset(std::int64_t count) {
  data::Dataset d;
  d.count = count;
  d.rows = kRows;
  d.cols = kCols;
  for (std::int64_t i = 0; i < count * kRows * kCols; ++i) {
    d.images.push_back(static_cast<std::uint8_t>(i * 37 % 256));
  }
  for (std::int64_t i = 0; i < count; ++i) d.labels.push_back(static_cast<std::uint8_t>(i % 3));
  return d;
}

std::filesystem::path temp_file(const std::string& name) {
  return std::filesystem::path(::testing::TempDir()) / ("test_api_" + name);
}

TEST(ApiTraining, TheReadmeLoop) {
  const data::Dataset train = tiny_dataset(10);
  const data::Dataset test = tiny_dataset(6);
  nn::ParamStore store;
  nn::create_parameters(tiny_cnn, store);  // zero-filled, then initialised
  nn::Rng rng(1);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  nn::Adam adam(store.tensors(), 1e-3);
  nn::Trainer trainer(tiny_cnn, store, adam, {.batch_size = 4});
  data::Batcher batches(train, 4);
  nn::Evaluator evaluator(tiny_cnn, store);
  for (int epoch = 1; epoch <= 2; ++epoch) {
    const nn::EpochResult r =
        nn::train_epoch(trainer, batches, rng, {.epoch = epoch, .progress = nn::show_progress()});
    const nn::Evaluation t = evaluator.evaluate(test);  // loss, accuracy, confusion matrix
    EXPECT_EQ(r.examples, 10);
    EXPECT_EQ(r.steps, 3);  // the last batch is short
    EXPECT_EQ(t.count, 6);
    EXPECT_EQ(t.confusion.size(), static_cast<std::size_t>(kClasses * kClasses));
  }
  EXPECT_EQ(adam.steps(), 6);
  const auto file = temp_file("readme.ckpt");
  nn::save_parameters(file, store, &adam, {{"epoch", std::to_string(2)}});
  nn::ParamStore reloaded;
  nn::create_parameters(tiny_cnn, reloaded);
  const nn::Checkpoint ckpt = nn::load_parameters(file, reloaded);  // by parameter name
  EXPECT_EQ(ckpt.metadata.at("epoch"), "2");
  EXPECT_EQ(reloaded.find("fc.w")->at(1), store.find("fc.w")->at(1));
  std::filesystem::remove(file);
}

// The README's regression model: float targets from Dataset::targets, a mean loss that splits
// (Note [Loss split]), no accuracy.
TEST(ApiTraining, ARegressionModelWithFloatTargets) {
  data::Dataset d = tiny_dataset(10);
  d.labels.clear();  // no class labels: targets instead
  d.target_shape = {2};
  for (std::int64_t i = 0; i < d.count * 2; ++i) d.targets.push_back(0.1f * static_cast<float>(i % 7));
  const nn::ModelFn regress = [](Graph& g, nn::ParamStore& p, std::int64_t b) {
    nn::ModelGraph m;
    m.inputs = g.input("x", {b, 1, kRows, kCols});
    m.labels = g.input("targets", {b, 2});  // f32 targets
    m.outputs = linear(flatten(m.inputs), p.param(g, "w", {2, kRows * kCols}), p.param(g, "b", {2}));
    m.loss = mse_loss(m.outputs, m.labels);
    return m;
  };
  nn::ParamStore store;
  nn::create_parameters(regress, store);
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer trainer(regress, store, sgd, {.batch_size = 4, .micro_batch = 2});
  EXPECT_EQ(trainer.loss_split(), nn::LossSplit::kMean);
  EXPECT_STREQ(nn::loss_split_name(trainer.loss_split()), "mean");
  EXPECT_EQ(trainer.micro_batch(), 2);
  data::Batcher batches(d, 4);
  nn::Rng rng(1);
  const nn::EpochResult r = nn::train_epoch(trainer, batches, rng);
  EXPECT_FALSE(r.has_accuracy);
  const nn::Evaluation e = nn::Evaluator(regress, store).evaluate(d);
  EXPECT_FALSE(e.has_accuracy);
  EXPECT_TRUE(std::isnan(e.accuracy));
  EXPECT_GT(e.loss, 0);
}

TEST(ApiTraining, ModelsAsLambdasAndTrainerOptions) {
  const data::Dataset train = tiny_dataset(8);
  nn::ModelFn model = [](Graph& g, nn::ParamStore& store, std::int64_t batch) {
    return tiny_cnn(g, store, batch);
  };
  nn::ParamStore store;
  nn::create_parameters(model, store);
  nn::Rng rng(2);
  nn::initialize(store, nn::Init::kHeNormal, rng);
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer micro(model, store, sgd, {.batch_size = 4, .micro_batch = 2});
  EXPECT_EQ(micro.micro_batch(), 2);
  nn::Momentum momentum(store.tensors(), 0.1);
  nn::Trainer alone(model, store, momentum, {.batch_size = 4, .comm = &dist::single()});
  EXPECT_EQ(alone.batch_size(), 4);
  nn::Adam adam(store.tensors(), 1e-3, 0.9, 0.99);
  nn::Trainer defaults(model, store, adam);
  EXPECT_EQ(defaults.batch_size(), nn::TrainerOptions{}.batch_size);

  data::Batcher batches(train, 4, 6);  // the first 6 examples
  EXPECT_EQ(batches.num_batches(), 2);
  batches.in_order();
  micro.step(train, batches.batch(0));
  EXPECT_EQ(micro.batch(), 4);
  EXPECT_TRUE(std::isfinite(micro.loss()));
  EXPECT_EQ(micro.gradients().size(), store.tensors().size());
  sgd.step(micro.gradients());  // an optimizer steps on a span of gradients too

  micro.prefetch(train, batches.batch(1));
  micro.parameters_changed();
  EXPECT_LE(micro.correct(), micro.batch());
  EXPECT_EQ(micro.exchange_stats().steps, 0);  // one process
  EXPECT_FALSE(micro.batch_contracted().empty());

  std::int64_t steps_seen = 0, updates = 0;
  const nn::EpochResult r = nn::train_epoch(
      alone, batches, rng,
      {.epoch = 3,
       .after_update = [&](std::int64_t) { ++updates; },
       .before_step = [&](std::int64_t, std::int64_t steps) { steps_seen = steps; }});
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(steps_seen, 2);
  EXPECT_EQ(updates, 2);
  EXPECT_EQ(nn::train_epoch(alone, batches, rng).examples, 6);
  nn::Evaluator evaluator(model, store, 3, &dist::single());
  EXPECT_EQ(evaluator.evaluate(train).count, 8);
  EXPECT_EQ(nn::Evaluator(tiny_cnn, store, 5).evaluate(train).count, 8);
}

TEST(ApiTraining, OptimizersAndInitializers) {
  Tensor w({2, 3}, DType::kF32), b({2}, DType::kF32), gw({2, 3}, DType::kF32), gb({2}, DType::kF32);
  gw.fill(1);
  gb.fill(1);
  nn::SGD sgd({w, b}, 0.5);
  sgd.step(std::vector<Tensor>{gw, gb});
  EXPECT_EQ(w.at(0), -0.5);
  nn::Momentum momentum({w}, 0.1, 0.5);
  EXPECT_EQ(momentum.state().size(), 1U);
  auto adam = nn::make_optimizer("adam", {w, b}, 1e-3);
  EXPECT_STREQ(adam->name(), "adam");
  adam->set_learning_rate(1e-2);
  EXPECT_EQ(adam->learning_rate(), 1e-2);
  EXPECT_EQ(nn::parse_init("he"), nn::Init::kHeNormal);
  EXPECT_STREQ(nn::init_name(nn::Init::kUniform), "uniform");
  EXPECT_EQ(nn::fans(Shape{8, 3, 5, 5}), (std::pair<std::int64_t, std::int64_t>{75, 200}));
  nn::Rng rng(4);
  const std::string state = rng.state();
  const double first = rng.uniform();
  rng.set_state(state);
  EXPECT_EQ(rng.uniform(), first);
  EXPECT_LT(rng.below(3), 3U);
  EXPECT_GE(rng.uniform(2, 3), 2.0);
  EXPECT_TRUE(std::isfinite(rng.normal()));
  nn::xavier_uniform(w, rng);
  nn::he_normal(w, rng);
  nn::normal(w, 0.0, 1.0, rng);
  nn::uniform(w, -1, 1, rng);
  EXPECT_LE(std::abs(w.at(0)), 1.0);
  nn::ParamStore store;
  Graph g;
  Value p = store.param(g, "p", {2, 2});
  Value q = store.param(g, "q", {3}, DType::kF64);
  EXPECT_EQ(store.names(), (std::vector<std::string>{"p", "q"}));
  EXPECT_EQ(store.count(), 7);
  EXPECT_EQ(g.value(p).raw(), store.find("p")->raw());
  EXPECT_EQ(q.dtype(), DType::kF64);
}

TEST(ApiData, IdxFilesBatchesAndExamples) {
  const data::Dataset d = tiny_dataset(5);
  const std::filesystem::path dir = temp_file("idx");
  std::filesystem::create_directories(dir);
  data::write_idx_images(dir / data::images_file_name(data::Split::kTrain), d.count, d.rows, d.cols,
                         d.images.data());
  data::write_idx_labels_gz(std::filesystem::path(dir) /
                                (std::string(data::labels_file_name(data::Split::kTrain)) + ".gz"),
                            d.count, d.labels.data());
  const data::Dataset read = data::load_split(dir, data::Split::kTrain, kRows, kCols);
  EXPECT_EQ(read.labels, d.labels);
  EXPECT_EQ(read.example_size(), kRows * kCols);
  std::filesystem::remove_all(dir);

  data::Batcher batches(d, 2);
  nn::Rng rng(3);
  batches.shuffle(rng);
  batches.fill(2);  // the short last batch
  EXPECT_EQ(batches.images(2).shape(), (Shape{1, 1, kRows, kCols}));
  Tensor images({2, 1, kRows, kCols}, DType::kF32), labels({2}, DType::kI32);
  const std::vector<std::int64_t> indices = {4, 1};
  data::load_examples(d, indices, images, labels);
  data::prefetch_examples(d, indices);
  EXPECT_EQ(labels.at(0), 1.0);  // 4 % 3
}

TEST(ApiCheckpoint, FilesMetadataAndTheOptimizer) {
  nn::ParamStore store;
  nn::create_parameters(tiny_cnn, store);
  nn::Rng rng(5);
  nn::initialize(store, nn::Init::kNormal, rng);
  nn::Adam adam(store.tensors(), 1e-3);
  adam.set_steps(7);
  const auto file = temp_file("ckpt");
  nn::save_parameters(file, store, &adam, {{"model", "tiny"}, {"epoch", "3"}});
  nn::save_parameters(temp_file("plain.ckpt"), store);
  const float kept = store.tensors()[0].data<float>()[0];
  store.tensors()[0].fill(0);
  nn::Adam fresh(store.tensors(), 1e-3);
  const nn::Checkpoint loaded = nn::load_parameters(file, store, &fresh);
  EXPECT_EQ(loaded.metadata.at("model"), "tiny");
  EXPECT_EQ(store.tensors()[0].data<float>()[0], kept);
  EXPECT_EQ(fresh.steps(), 7);
  nn::load_parameters(temp_file("plain.ckpt"), store);

  nn::Checkpoint ckpt;
  ckpt.metadata = {{"note", "by hand"}};
  ckpt.tensors.push_back({"bytes", "U8", {2}, {std::byte{1}, std::byte{2}}});
  nn::add_to_checkpoint(ckpt, store);
  nn::save_checkpoint(file, ckpt);
  const nn::Checkpoint back = nn::load_checkpoint(file);
  ASSERT_NE(back.find("bytes"), nullptr);
  EXPECT_EQ(back.find("bytes")->data[1], std::byte{2});
  nn::load_from_checkpoint(back, file, store);
  nn::write_file_atomically(temp_file("report.txt"), "done\n");
  for (const char* name : {"ckpt", "plain.ckpt", "report.txt"}) {
    std::filesystem::remove(temp_file(name));
  }
}

TEST(ApiModels, TheAppsNetworksByName) {
  nn::ParamStore store;
  Graph g;
  const nn::Network net = nn::build_network("seed", g, 2, store);
  EXPECT_EQ(net.logits.shape(), (Shape{2, 10}));
  EXPECT_FALSE(net.layers.empty());
  nn::ModelFn lenet = nn::model_fn("lenet5");
  nn::ParamStore lenet_store;
  nn::create_parameters(lenet, lenet_store);
  EXPECT_GT(lenet_store.count(), 0);
  EXPECT_EQ(nn::model_names().size(), 4U);  // seed, seed-nopool, lenet5, resnet
}

TEST(ApiDist, TheSingleProcessCommunicator) {
  dist::Communicator& comm = dist::single();
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  EXPECT_EQ(dist::allgather_strings(comm, "mine"), std::vector<std::string>{"mine"});
  dist::check_same(comm, "value", "same");
  EXPECT_TRUE(dist::any(comm, true));
  const std::array<std::byte, 2> bytes = {std::byte{1}, std::byte{2}};
  EXPECT_EQ(dist::fingerprint(bytes), dist::fingerprint(std::span<const std::byte>(bytes), 0));
  EXPECT_GE(dist::launched_size(), 1);
  (void)dist::mpi_built();
  (void)dist::launched_by_mpi();
  (void)dist::local_size();
}

// ---------------------------------------------------------------- losses (ops/loss.hpp)

double run_scalar(Graph& g, Value out, std::initializer_list<std::pair<Value, Tensor>> feeds) {
  Executor ex(g, {out});
  for (const auto& [v, t] : feeds) ex.bind(v, t);
  ex.run();
  return ex[out].at(0);
}

TEST(ApiLoss, CallingFormsAndDefaults) {
  Graph g(DType::kF64);
  auto x = g.input("x", {2, 3});
  auto t = g.input("t", {2, 3});
  Tensor xv({2, 3}, DType::kF64), tv({2, 3}, DType::kF64);
  for (int i = 0; i < 6; ++i) {
    xv.set(i, 0.5 * i - 1.0);
    tv.set(i, i % 2 ? 1.0 : 0.0);
  }
  double sq = 0, ab = 0;
  for (int i = 0; i < 6; ++i) {
    const double d = xv.at(i) - tv.at(i);
    sq += d * d;
    ab += std::abs(d);
  }
  EXPECT_NEAR(run_scalar(g, mse_loss(x, t), {{x, xv}, {t, tv}}), sq / 6, 1e-12);  // mean
  EXPECT_NEAR(run_scalar(g, mse_loss(x, t, Reduction::kSum), {{x, xv}, {t, tv}}), sq, 1e-12);
  EXPECT_NEAR(run_scalar(g, l1_loss(x, t), {{x, xv}, {t, tv}}), ab / 6, 1e-12);
  EXPECT_EQ(mse_loss(x, t, Reduction::kNone).shape(), (Shape{2, 3}));
  EXPECT_EQ(huber_loss(x, t).shape(), Shape{});             // delta 1, mean
  EXPECT_EQ(huber_loss(x, t, 0.5, Reduction::kNone).shape(), (Shape{2, 3}));
  EXPECT_EQ(binary_cross_entropy_with_logits(x, t).shape(), Shape{});
  auto pw = g.constant(Tensor({3}, DType::kF64), "pos_weight");
  EXPECT_EQ(binary_cross_entropy_with_logits(x, t, pw, Reduction::kSum).shape(), Shape{});
  auto y = g.input_labels("y", {2});
  EXPECT_EQ(nll_loss(log_softmax(x), y).shape(), Shape{});
  EXPECT_EQ(nll_loss(log_softmax(x), y, pw, Reduction::kNone).shape(), (Shape{2}));
  EXPECT_EQ(softmax_cross_entropy(x, y, {.label_smoothing = 0.1}).shape(), Shape{});
  EXPECT_EQ(softmax_cross_entropy(x, y, {.weights = pw, .reduction = Reduction::kNone}).shape(),
            (Shape{2}));
  EXPECT_STREQ(reduction_name(Reduction::kSum), "sum");
}

// With the default options, the options form is the two-argument op itself: the same bits.
TEST(ApiLoss, DefaultCrossEntropyOptionsAreTheTwoArgumentOp) {
  Graph g;
  auto x = g.input("x", {5, 4});
  auto y = g.input_labels("y", {5});
  Value a = softmax_cross_entropy(x, y);
  Value b = softmax_cross_entropy(x, y, CrossEntropyOptions{});
  EXPECT_STREQ(g.node(b).op->name(), g.node(a).op->name());
  Value c = softmax_cross_entropy(x, y, {.label_smoothing = 0.0, .reduction = Reduction::kSum});
  EXPECT_STRNE(g.node(c).op->name(), g.node(a).op->name());
}

TEST(ApiLoss, LabelOutOfRangeThrowsAtRunTimeNamingTheOpAndTheLabel) {
  Graph g;
  auto x = g.input("x", {3, 4});
  auto y = g.input_labels("y", {3});
  Tensor xv({3, 4}, DType::kF32), yv({3}, DType::kI32);
  yv.set(0, 1);
  yv.set(1, 4);  // one past the last class
  yv.set(2, 0);
  const std::pair<Value, const char*> losses[] = {
      {nll_loss(x, y), "nll_loss"},
      {softmax_cross_entropy(x, y, {.label_smoothing = 0.2}), "softmax_cross_entropy"}};
  for (const auto& [loss, op] : losses) {
    Executor ex(g, {loss});
    ex.bind(x, xv).bind(y, yv);
    try {
      ex.run();
      ADD_FAILURE() << "no error for label 4 of 4 classes";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("label 4 of row 1"), std::string::npos) << msg;
      EXPECT_NE(msg.find(op), std::string::npos) << msg;
    }
  }
}

// NaN propagates through every loss and its gradient; huge logits stay finite.
TEST(ApiLoss, NaNPropagatesAndHugeLogitsStayFinite) {
  Graph g(DType::kF64);
  auto x = g.input("x", {1, 2});
  auto t = g.input("t", {1, 2});
  Tensor xv({1, 2}, DType::kF64), tv({1, 2}, DType::kF64);
  xv.set(0, std::nan(""));
  xv.set(1, 1.0);
  tv.set(0, 1.0);
  tv.set(1, 0.0);
  for (Value loss : {mse_loss(x, t), l1_loss(x, t), huber_loss(x, t),
                     binary_cross_entropy_with_logits(x, t)}) {
    Value gx = grad(loss, x);
    Executor ex(g, {loss, gx});
    ex.bind(x, xv).bind(t, tv).run();
    EXPECT_TRUE(std::isnan(ex[loss].at(0))) << g.node(loss).op->name();
    EXPECT_TRUE(std::isnan(ex[gx].at(0))) << g.node(loss).op->name();
  }
  xv.set(0, 1e4);
  xv.set(1, -1e4);
  Value bce = binary_cross_entropy_with_logits(x, t);
  Value gx = grad(bce, x);
  Executor ex(g, {bce, gx});
  ex.bind(x, xv).bind(t, tv).run();
  EXPECT_NEAR(ex[bce].at(0), 0.0, 1e-12);  // both logits agree with their targets
  EXPECT_TRUE(std::isfinite(ex[gx].at(0)) && std::isfinite(ex[gx].at(1)));
}

// The mean of a large loss is the same for any thread count (a fixed-order sum).
TEST(ApiLoss, SumsAreBitIdenticalForAnyThreadCount) {
  Graph g;
  auto x = g.input("x", {300, 70});
  auto t = g.input("t", {300, 70});
  Tensor xv({300, 70}, DType::kF32), tv({300, 70}, DType::kF32);
  nn::Rng rng(5);
  nn::uniform(xv, -3, 3, rng);
  nn::uniform(tv, 0, 1, rng);
  Value loss = add(mse_loss(x, t), binary_cross_entropy_with_logits(x, t));
  Value gx = grad(loss, x);
  std::vector<float> first;
  for (int threads : {1, 2, 3}) {
    ThreadScope scope(threads);
    Executor ex(g, {loss, gx});
    ex.bind(x, xv).bind(t, tv).run();
    std::vector<float> got = {ex[loss].data<float>()[0]};
    got.insert(got.end(), ex[gx].data<float>(), ex[gx].data<float>() + ex[gx].numel());
    if (first.empty()) {
      first = got;
    } else {
      EXPECT_TRUE(first == got) << threads << " threads";
    }
  }
}

// ---------------------------------------------------------------- layer_norm, group_norm (ops/norm.hpp)

// A braced list is a normalized shape ({3} is shape [3], not rank 3); weight and bias default to
// none; options last.
TEST(ApiNorm, CallingFormsAndDefaults) {
  Graph g(DType::kF64);
  auto x = g.input("x", {2, 3});
  Tensor xv({2, 3}, DType::kF64);
  for (int i = 0; i < 6; ++i) xv.set(i, i * i * 0.5);
  auto w = g.param("w", {3});
  auto b = g.param("b", {3});
  const auto eval = [&](Value y) {
    Executor ex(g, {y});
    ex.bind(x, xv).run();
    return ex[y].clone();
  };
  const Tensor by_rank = eval(layer_norm(x, 1));
  const Tensor by_list = eval(layer_norm(x, {3}));
  const Tensor whole = eval(layer_norm(x, {2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(by_rank.at(i), by_list.at(i));
  EXPECT_NE(by_rank.at(0), whole.at(0));
  EXPECT_THROW(layer_norm(x, {2}), ShapeError);  // shape [2] is not x's last dimension
  EXPECT_EQ(layer_norm(x, Shape{3}, w, b, {.eps = 1e-3}).shape(), (Shape{2, 3}));
  EXPECT_EQ(layer_norm(x, 1, w).shape(), (Shape{2, 3}));
  EXPECT_EQ(layer_norm(x, 1, Value(), b, LayerNormOptions{.eps = 0.1}).shape(), (Shape{2, 3}));
  EXPECT_EQ(group_norm(x, 3).shape(), (Shape{2, 3}));
  EXPECT_EQ(group_norm(x, 1, w, b, {.eps = 1e-3}).shape(), (Shape{2, 3}));
  nn::ParamStore store;
  EXPECT_EQ(nn::layer_norm_layer(g, store, "ln", x, 1).shape(), (Shape{2, 3}));
  EXPECT_EQ(nn::group_norm_layer(g, store, "gn", x, 3, {.eps = 1e-3}).shape(), (Shape{2, 3}));
  EXPECT_EQ(store.names().size(), 4u);
}

}  // namespace
