// layer_norm and group_norm (ops/norm.hpp) beyond the op table (tests/op_cases_norm.cpp, which
// checks values and gradients against PyTorch and finite differences): bits across thread
// counts, second-order gradients refused, the batch-wide trait, the layers' parameters (roles,
// initialisation, weight decay) and the trainer splitting a batch of a model that holds them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tbgrad.hpp>
#include <vector>

namespace {

using namespace tbgrad;

Tensor random_tensor(const Shape& shape, DType dtype, std::uint64_t seed, double lo = -1.0,
                     double hi = 1.0) {
  nn::Rng rng(seed);
  Tensor t(shape, dtype);
  nn::uniform(t, lo, hi, rng);
  return t;
}

std::vector<double> values(const Tensor& t) {
  std::vector<double> v;
  for (std::int64_t i = 0; i < t.numel(); ++i) v.push_back(t.at(i));
  return v;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// y = op(x, w, b) and the gradients of sum(y * R) for x, w and b, at `threads`.
using NormFn = Value (*)(Value x, Value w, Value b);
std::vector<Tensor> run_norm(NormFn fn, const Shape& xs, const Shape& ws, int threads) {
  ThreadScope scope(threads);
  Graph g(DType::kF32);
  Value x = g.input("x", xs);
  Value w = g.input("w", ws);
  Value b = g.input("b", ws);
  Value y = fn(x, w, b);
  Value loss = sum(mul(y, g.constant(random_tensor(xs, DType::kF32, 2), "R")));
  Value gx = grad(loss, x), gw = grad(loss, w), gb = grad(loss, b);
  Executor ex(g, {y, gx, gw, gb});
  ex.bind(x, random_tensor(xs, DType::kF32, 3, -1, 3))
      .bind(w, random_tensor(ws, DType::kF32, 4, 0.5, 1.5))
      .bind(b, random_tensor(ws, DType::kF32, 5))
      .run();
  return {ex.get(y).clone(), ex.get(gx).clone(), ex.get(gw).clone(), ex.get(gb).clone()};
}

void expect_same_bits_for_1_2_3_threads(NormFn fn, const Shape& xs, const Shape& ws) {
  const std::vector<Tensor> one = run_norm(fn, xs, ws, 1);
  for (int threads : {2, 3}) {
    const std::vector<Tensor> other = run_norm(fn, xs, ws, threads);
    for (std::size_t k = 0; k < one.size(); ++k) {
      EXPECT_TRUE(same_bits(one[k], other[k])) << "tensor " << k << " at " << threads << " threads";
    }
  }
}

// Large enough that every kernel (rows, and the weight's and bias's channels) splits its work.
TEST(NormThreads, LayerNormForwardAndGradientsAreBitIdentical) {
  expect_same_bits_for_1_2_3_threads(
      [](Value x, Value w, Value b) { return layer_norm(x, 1, w, b); }, {64, 3, 500}, {500});
  expect_same_bits_for_1_2_3_threads(
      [](Value x, Value w, Value b) { return layer_norm(x, 2, w, b); }, {64, 3, 500}, {3, 500});
}

TEST(NormThreads, GroupNormForwardAndGradientsAreBitIdentical) {
  expect_same_bits_for_1_2_3_threads(
      [](Value x, Value w, Value b) { return group_norm(x, 4, w, b); }, {8, 16, 20, 20}, {16});
  expect_same_bits_for_1_2_3_threads(
      [](Value x, Value w, Value b) { return group_norm(x, 8, w, b); }, {4096, 16}, {16});
}

// Each row normalised alone: the rows of a batch give the values each gives by itself.
TEST(NormRows, EachExampleIsNormalisedAlone) {
  const Shape xs{5, 6, 3};
  const Tensor xv = random_tensor(xs, DType::kF64, 8, -2, 2);
  const auto run = [](const Tensor& x, bool group) {
    Graph g(DType::kF64);
    Value in = g.input("x", x.shape());
    Value y = group ? group_norm(in, 3) : layer_norm(in, {6, 3});
    Executor ex(g, {y});
    ex.bind(in, x).run();
    return ex.get(y).clone();
  };
  for (bool group : {false, true}) {
    const Tensor whole = run(xv, group);
    for (std::int64_t n = 0; n < xs[0]; ++n) {
      Tensor row(Shape{1, 6, 3}, DType::kF64);
      for (std::int64_t i = 0; i < 18; ++i) row.data<double>()[i] = xv.at(n * 18 + i);
      const Tensor alone = run(row, group);
      for (std::int64_t i = 0; i < 18; ++i) {
        EXPECT_EQ(alone.at(i), whole.at(n * 18 + i)) << (group ? "group_norm" : "layer_norm");
      }
    }
  }
}

// The worked example of F.layer_norm([1, 2, 3, 4]): mean 2.5, variance 1.25.
TEST(NormValues, LayerNormOfOneToFour) {
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 4});
  Value y = layer_norm(x, 1, Value(), Value(), {.eps = 0.0});
  Executor ex(g, {y});
  Tensor xv({1, 4}, DType::kF64);
  for (int i = 0; i < 4; ++i) xv.data<double>()[i] = i + 1;
  ex.bind(x, xv).run();
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(ex.get(y).at(i), (i + 1 - 2.5) / std::sqrt(1.25), 1e-15);
}

// No examples: empty outputs, and gradients of the weight and bias of zeros (sums of nothing).
TEST(NormValues, EmptyBatch) {
  for (bool group : {false, true}) {
    Graph g(DType::kF64);
    Value x = g.input("x", {0, 4, 3});
    const Shape ws = group ? Shape{4} : Shape{4, 3};
    Value w = g.input("w", ws), b = g.input("b", ws);
    Value y = group ? group_norm(x, 2, w, b) : layer_norm(x, 2, w, b);
    Value loss = sum(y);
    Value gw = grad(loss, w), gb = grad(loss, b);
    Executor ex(g, {y, gw, gb});
    Tensor wv(ws, DType::kF64), bv(ws, DType::kF64);
    wv.fill(1.0);
    ex.bind(x, Tensor({0, 4, 3}, DType::kF64)).bind(w, wv).bind(b, bv).run();
    EXPECT_EQ(ex.get(y).numel(), 0);
    EXPECT_EQ(values(ex.get(gw)), std::vector<double>(static_cast<std::size_t>(ws.numel()), 0.0));
    EXPECT_EQ(values(ex.get(gb)), std::vector<double>(static_cast<std::size_t>(ws.numel()), 0.0));
  }
}

TEST(NormSecondOrder, GradientOfTheGradientThrowsNamingTheKernel) {
  for (bool group : {false, true}) {
    Graph g(DType::kF64);
    Value x = g.input("x", {2, 4, 3});
    Value w = g.param("w", group ? Shape{4} : Shape{3});
    Value y = group ? group_norm(x, 2, w) : layer_norm(x, 1, w);
    Value gx = grad(sum(mul(y, y)), x);
    const std::string kernel = group ? "group_norm_backward_input" : "layer_norm_backward_input";
    try {
      (void)grad(sum(mul(gx, gx)), x);
      ADD_FAILURE() << "no error for a second-order gradient through " << kernel;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(kernel), std::string::npos) << e.what();
    }
  }
}

bool batch_wide(const Value& v) {
  return v.graph().node(v).op->traits().batch_wide;
}

TEST(NormTraits, BatchWideOnlyWhenLayerNormSpansAxisZero) {
  Graph g;
  Value x = g.input("x", {4, 3, 5});
  EXPECT_FALSE(batch_wide(layer_norm(x, 1)));
  EXPECT_FALSE(batch_wide(layer_norm(x, 2)));
  EXPECT_TRUE(batch_wide(layer_norm(x, 3)));
  EXPECT_FALSE(batch_wide(group_norm(x, 3)));
  // And their gradients.
  Value gy = g.input("gy", {4, 3, 5});
  EXPECT_FALSE(batch_wide(layer_norm_backward_input(x, 2, Value(), gy)));
  EXPECT_TRUE(batch_wide(layer_norm_backward_weight(x, 3, gy)));
  EXPECT_TRUE(batch_wide(layer_norm_backward_bias(gy, 3)));
  EXPECT_FALSE(batch_wide(layer_norm_backward_bias(gy, 1)));
  EXPECT_FALSE(batch_wide(group_norm_backward_weight(x, 3, gy)));
  EXPECT_EQ(g.node(layer_norm(x, 3)).op->traits().name, std::string("layer_norm"));
}

// ---------------------------------------------------------------------------------------------
// The layers
// ---------------------------------------------------------------------------------------------

// conv 3x3 -> group norm (2 groups) -> relu -> flatten -> layer norm -> linear, on [B, 2, 4, 4].
nn::ModelGraph norm_model(Graph& g, nn::ParamStore& store, std::int64_t b) {
  nn::ModelGraph m;
  m.inputs = g.input("x", {b, 2, 4, 4});
  m.labels = g.input_labels("labels", {b});
  Value h = conv2d(m.inputs, store.param(g, "conv.w", {4, 2, 3, 3}), {.padding = 1});
  h = relu(nn::group_norm_layer(g, store, "gn", h, 2));
  h = nn::layer_norm_layer(g, store, "ln", flatten(h), 1);
  const Value w = store.param(g, "fc.w", {3, 64});  // before fc.b: the store's order
  m.outputs = linear(h, w, store.param(g, "fc.b", {3}));
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

void init_store(nn::ParamStore& store) {
  nn::create_parameters(norm_model, store);
  nn::Rng rng(3);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
}

TEST(NormLayers, RolesInitialisationAndDecayMask) {
  nn::ParamStore store;
  init_store(store);
  EXPECT_EQ(store.names(), (std::vector<std::string>{"conv.w", "gn.weight", "gn.bias", "ln.weight",
                                                     "ln.bias", "fc.w", "fc.b"}));
  EXPECT_EQ(store.role("gn.weight"), nn::Role::kNormScale);
  EXPECT_EQ(store.role("gn.bias"), nn::Role::kNormShift);
  EXPECT_EQ(store.role("ln.weight"), nn::Role::kNormScale);
  EXPECT_EQ(store.role("ln.bias"), nn::Role::kNormShift);
  EXPECT_EQ(store.find("gn.weight")->shape(), (Shape{4}));
  EXPECT_EQ(store.find("ln.bias")->shape(), (Shape{64}));
  EXPECT_EQ(values(*store.find("gn.weight")), std::vector<double>(4, 1.0));
  EXPECT_EQ(values(*store.find("gn.bias")), std::vector<double>(4, 0.0));
  EXPECT_EQ(values(*store.find("ln.weight")), std::vector<double>(64, 1.0));
  EXPECT_EQ(values(*store.find("ln.bias")), std::vector<double>(64, 0.0));
  EXPECT_TRUE(store.buffer_names().empty());
  // Weights decay; biases and the normalisations' scales and shifts do not.
  EXPECT_EQ(nn::decay_mask(store), (std::vector<bool>{true, false, false, false, false, true, false}));
}

TEST(NormLayers, LayerNormOverTwoAxesHasParametersOfTheirShape) {
  nn::ParamStore store;
  Graph g;
  Value x = g.input("x", {2, 3, 5});
  Value y = nn::layer_norm_layer(g, store, "ln", x, 2);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 5}));
  EXPECT_EQ(store.find("ln.weight")->shape(), (Shape{3, 5}));
  EXPECT_THROW(nn::layer_norm_layer(g, store, "ln2", x, 4), ShapeError);
  EXPECT_THROW(nn::group_norm_layer(g, store, "gn", x, 2), ShapeError);  // 3 channels
  EXPECT_EQ(store.names().size(), 2u);  // nothing created by the refused layers
}

data::Dataset norm_data(std::int64_t count) {
  data::Dataset d;
  d.count = count;
  d.rows = 8;
  d.cols = 4;
  nn::Rng rng(77);
  for (std::int64_t i = 0; i < count * 32; ++i) d.images.push_back(static_cast<std::uint8_t>(rng.below(256)));
  for (std::int64_t i = 0; i < count; ++i) d.labels.push_back(static_cast<std::uint8_t>(rng.below(3)));
  return d;
}

// Not batch-wide: the trainer splits the batch into micro-batches, and their loss is the whole
// batch's (to rounding), the same bits for one and two threads.
TEST(NormTrainer, SplitsTheBatchAndGivesTheWholeBatchsLoss) {
  const std::int64_t b = 12;
  const data::Dataset data = norm_data(b);
  std::vector<std::int64_t> idx;
  for (std::int64_t i = 0; i < b; ++i) idx.push_back(i);
  nn::ParamStore ref;
  init_store(ref);
  Graph g;
  const nn::ModelGraph m = norm_model(g, ref, b);
  Executor ex(g, {m.loss});
  Tensor images(m.inputs.shape(), DType::kF32), labels(m.labels.shape(), DType::kI32);
  data::load_examples(data, idx, images, labels);
  ex.bind(m.inputs, images).bind(m.labels, labels).run();
  const double whole = ex.get(m.loss).at(0);

  std::vector<double> losses;
  std::vector<Tensor> weights;
  for (int threads : {1, 2}) {
    ThreadScope scope(threads);
    nn::ParamStore store;
    init_store(store);
    nn::SGD sgd(store.tensors(), 0.1);
    nn::Trainer trainer(norm_model, store, sgd, {.batch_size = b, .micro_batch = 4, .seed = 4});
    EXPECT_EQ(trainer.micro_batch(), 4);
    trainer.step(data, idx);
    EXPECT_NEAR(trainer.loss(), whole, 1e-5 * std::abs(whole)) << threads << " threads";
    losses.push_back(trainer.loss());
    weights.push_back(store.find("ln.weight")->clone());
  }
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_TRUE(same_bits(weights[0], weights[1]));
  EXPECT_NE(values(weights[0]), std::vector<double>(64, 1.0));  // the step moved the scale
}

}  // namespace
