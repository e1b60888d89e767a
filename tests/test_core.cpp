// Graph, executor, autodiff and threading behaviour (op numerics live in test_ops_*.cpp).
#include <gtest/gtest.h>
#include <tbb/task_arena.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <tbgrad.hpp>

namespace tbgrad {
namespace {

Tensor random_tensor(Shape shape, DType dtype, std::uint64_t seed, double lo = -1, double hi = 1) {
  Tensor t(shape, dtype);
  nn::Rng rng(seed);
  nn::uniform(t, lo, hi, rng);
  return t;
}

Tensor labels_tensor(std::int64_t n, std::uint64_t seed) {
  Tensor t(Shape{n}, DType::kI32);
  nn::Rng rng(seed);
  for (std::int64_t i = 0; i < n; ++i) t.set(i, static_cast<double>(rng.below(10)));
  return t;
}

TEST(Graph, ValuesKnowTheirShapeDtypeAndName) {
  Graph g;
  Value x = g.input("x", {2, 3});
  Value y = relu(x);
  EXPECT_EQ(y.shape(), (Shape{2, 3}));
  EXPECT_EQ(y.dtype(), DType::kF32);
  EXPECT_EQ(x.describe(), "x ([2,3])");
  EXPECT_EQ(g.find("x"), x);
  EXPECT_FALSE(g.find("nope").valid());
}

TEST(Graph, ValuesOfDifferentGraphsDoNotMix) {
  Graph a, b;
  Value x = a.input("x", {2});
  Value y = b.input("y", {2});
  EXPECT_THROW(add(x, y), ShapeError);
}

TEST(Executor, RunsOnlyTheNodesTheOutputsNeed) {
  Graph g;
  Value x = g.input("x", {4});
  Value used = relu(x);
  Value unused = sigmoid(x);
  (void)unused;
  Executor ex(g, {used});
  EXPECT_EQ(ex.num_steps(), 1);
  Tensor t({4}, DType::kF32);
  t.set(0, -1);
  t.set(1, 2);
  ex.bind(x, t).run();
  EXPECT_EQ(ex[used].at(0), 0.0);
  EXPECT_EQ(ex[used].at(1), 2.0);
  EXPECT_THROW(ex.get(unused), Error);
}

TEST(Executor, ReusesBuffersOfValuesNoLongerNeeded) {
  Graph g;
  Value x = g.input("x", {1024});
  Value h = x;
  for (int i = 0; i < 10; ++i) h = relu(scale(h, 0.5));
  Executor ex(g, {h});
  // 20 op outputs of 4 KiB each, but only two are ever live at once.
  EXPECT_EQ(ex.unplanned_bytes(), 20u * 4096u);
  EXPECT_LE(ex.arena_bytes(), 2u * 4096u);
  Tensor t({1024}, DType::kF32);
  t.fill(1024.0);
  ex.bind(x, t).run();
  EXPECT_EQ(ex[h].at(7), 1.0);
}

TEST(Executor, KeepsEveryRequestedOutputIntact) {
  Graph g;
  Value x = g.input("x", {8});
  Value a = scale(x, 2.0);
  Value b = scale(a, 3.0);
  Value c = scale(b, 5.0);
  Executor ex(g, {a, c});
  Tensor t({8}, DType::kF32);
  t.fill(1.0);
  ex.bind(x, t).run();
  EXPECT_EQ(ex[a].at(3), 2.0);
  EXPECT_EQ(ex[c].at(3), 30.0);
}

TEST(Executor, RefusesToRunWithAnUnboundInput) {
  Graph g;
  Value x = g.input("pixels", {2});
  Executor ex(g, {relu(x)});
  try {
    ex.run();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pixels"), std::string::npos) << e.what();
  }
}

TEST(Executor, BindRejectsAWrongShapeOrDtype) {
  Graph g;
  Value x = g.input("x", {2, 3});
  Executor ex(g, {relu(x)});
  EXPECT_THROW(ex.bind(x, Tensor({3, 2}, DType::kF32)), ShapeError);
  EXPECT_THROW(ex.bind(x, Tensor({2, 3}, DType::kF64)), ShapeError);
}

TEST(Autodiff, GradOfAValueTheLossDoesNotDependOnIsZero) {
  Graph g;
  Value x = g.input("x", {3});
  Value w = g.param("w", {3});
  Value unrelated = g.param("unrelated", {2, 2});
  g.value(unrelated).fill(5.0);
  Value loss = sum(mul(x, w));
  auto grads = grad(loss, {w, unrelated});
  Executor ex(g, {grads});
  Tensor t({3}, DType::kF32);
  t.fill(2.0);
  ex.bind(x, t).run();
  EXPECT_EQ(ex[grads[0]].at(1), 2.0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(ex[grads[1]].at(i), 0.0);
}

TEST(Autodiff, FanOutAccumulatesGradients) {
  Graph g;
  Value w = g.param("w", {1});
  g.value(w).fill(3.0);
  // loss = w*w + w  ->  dloss/dw = 2w + 1 = 7
  Value loss = sum(add(mul(w, w), w));
  Value gw = grad(loss, w);
  Executor ex(g, {gw});
  ex.run();
  EXPECT_EQ(ex[gw].at(0), 7.0);
}

TEST(Autodiff, RequiresAScalarLoss) {
  Graph g;
  Value w = g.param("w", {3});
  try {
    grad(relu(w), {w});
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("scalar"), std::string::npos) << e.what();
  }
}

// An op defined outside the library, recording the arena's concurrency: proves both that user
// ops plug in and that the thread count reaches the kernels.
class ConcurrencyProbe final : public Op {
 public:
  explicit ConcurrencyProbe(std::atomic<int>* seen) : seen_(seen) {}
  const char* name() const override { return "concurrency_probe"; }
  void forward(const KernelContext& ctx) const override {
    seen_->store(tbb::this_task_arena::max_concurrency());
    ctx.output.copy_from(ctx.inputs[0]);
  }

 private:
  std::atomic<int>* seen_;
};

TEST(Threads, TheThreadCountIsHonouredExactlyAlsoAboveTheCoreCount) {
  std::atomic<int> seen{0};
  Graph g;
  Value x = g.input("x", {1});
  Value ins[] = {x};
  Value y = g.add_op(std::make_shared<ConcurrencyProbe>(&seen), ins, x.shape(), x.dtype());
  Executor ex(g, {y});
  Tensor t({1}, DType::kF32);
  ex.bind(x, t);
  for (int n : {1, 2, 3, 7}) {
    ThreadScope scope(n);
    EXPECT_EQ(num_threads(), n);
    ex.run();
    EXPECT_EQ(seen.load(), n);
  }
}

// The reference CNN's loss and every gradient, as raw bytes.
std::vector<std::vector<std::byte>> reference_cnn_step(int threads, std::int64_t batch,
                                                       ExecutorOptions options = {},
                                                       int* fused = nullptr) {
  ThreadScope scope(threads);
  Graph g;
  nn::ParamStore store;
  nn::Network net = nn::build_network("seed", g, batch, store);
  nn::Rng rng(7);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  auto grads = grad(net.loss, net.params);
  Executor ex(g, {net.loss, grads}, options);
  if (fused) *fused = ex.num_fused();
  Tensor images = random_tensor({batch, 1, 28, 28}, DType::kF32, 11, 0, 1);
  Tensor labels = labels_tensor(batch, 12);
  ex.bind(net.images, images).bind(net.labels, labels).run();
  std::vector<std::vector<std::byte>> out;
  auto bytes = [](const Tensor& t) {
    const auto* p = static_cast<const std::byte*>(t.raw());
    return std::vector<std::byte>(p, p + t.nbytes());
  };
  out.push_back(bytes(ex[net.loss]));
  for (Value gv : grads) out.push_back(bytes(ex[gv]));
  return out;
}

TEST(Determinism, ReferenceCnnLossAndGradientsAreBitIdenticalFor1To4Threads) {
  for (std::int64_t batch : {32, 30}) {
    const auto one = reference_cnn_step(1, batch);
    for (int threads : {2, 3, 4}) {
      const auto many = reference_cnn_step(threads, batch);
      ASSERT_EQ(many.size(), one.size());
      for (std::size_t i = 0; i < one.size(); ++i) {
        EXPECT_TRUE(many[i] == one[i]) << "output " << i << " differs with " << threads
                                       << " threads at batch " << batch;
      }
    }
  }
}

// Note [Epilogues]: the seed model's two conv + ReLU pairs and the two pooling gradients
// followed by a ReLU gradient run fused, and give the bytes of the unfused run.
TEST(Epilogues, FusedReluStepsGiveTheUnfusedBits) {
  for (int threads : {1, 2}) {
    int fused = -1, unfused = -1;
    const auto with = reference_cnn_step(threads, 8, {}, &fused);
    const auto without = reference_cnn_step(threads, 8, {.fuse = false}, &unfused);
    EXPECT_EQ(fused, 4);
    EXPECT_EQ(unfused, 0);
    ASSERT_EQ(with.size(), without.size());
    for (std::size_t i = 0; i < with.size(); ++i) {
      EXPECT_TRUE(with[i] == without[i]) << "output " << i << " at " << threads << " threads";
    }
  }
}

// A producer whose output is wanted, or read by another op too, keeps its own buffer and values.
TEST(Epilogues, AProducerThatIsAnOutputOrReadTwiceIsNotFused) {
  Graph g;
  Value x = g.input("x", {1, 1, 6, 6});
  Value k = g.input("k", {2, 1, 3, 3});
  Tensor xv = random_tensor({1, 1, 6, 6}, DType::kF32, 3);
  Tensor kv = random_tensor({2, 1, 3, 3}, DType::kF32, 4);
  Value c = conv2d(x, k);
  Value r = relu(c);
  Executor wanted(g, {r, c});
  wanted.bind(x, xv).bind(k, kv).run();
  EXPECT_EQ(wanted.num_fused(), 0);
  bool negative = false;
  for (std::int64_t i = 0; i < c.shape().numel(); ++i) {
    const double cv = wanted[c].at(i);
    negative = negative || cv < 0;
    EXPECT_EQ(wanted[r].at(i), cv > 0 ? cv : 0.0) << i;
  }
  EXPECT_TRUE(negative) << "the test needs some negative convolution outputs";

  Value twice = add(r, c);  // c read by relu and by add
  Executor read_twice(g, {twice});
  read_twice.bind(x, xv).bind(k, kv).run();
  EXPECT_EQ(read_twice.num_fused(), 0);
  for (std::int64_t i = 0; i < c.shape().numel(); ++i) {
    EXPECT_EQ(read_twice[twice].at(i), wanted[r].at(i) + wanted[c].at(i)) << i;
  }

  Executor alone(g, {r});  // c read by relu only: fused, the same values
  alone.bind(x, xv).bind(k, kv).run();
  EXPECT_EQ(alone.num_fused(), 1);
  for (std::int64_t i = 0; i < c.shape().numel(); ++i) {
    EXPECT_EQ(alone[r].at(i), wanted[r].at(i)) << i;
  }
}

// The ReLU gradient's mask is read while its producer runs: an input (which bind() may change
// after planning) cannot be one, so that pair is not fused, and the result follows the input.
TEST(Epilogues, AMaskThatIsAnInputIsNotFused) {
  Graph g;
  Value s = g.input("s", {1, 2, 4, 4});
  Value gy = g.input("gy", {1, 2, 2, 2});
  Value gx = relu_backward(s, avg_pool2d_backward(gy, s.shape(), {.kernel = 2, .stride = 2}));
  Executor ex(g, {gx});
  EXPECT_EQ(ex.num_fused(), 0);
  Tensor sv = random_tensor({1, 2, 4, 4}, DType::kF32, 5);
  Tensor gv = random_tensor({1, 2, 2, 2}, DType::kF32, 6);
  ex.bind(s, sv).bind(gy, gv).run();
  for (std::int64_t i = 0; i < 32; ++i) {
    const std::int64_t plane = i / 16, row = (i % 16) / 4, col = i % 4;
    const double pooled = gv.at(plane * 4 + (row / 2) * 2 + col / 2) / 4;
    EXPECT_FLOAT_EQ(static_cast<float>(ex[gx].at(i)),
                    static_cast<float>(sv.at(i) > 0 ? pooled : 0.0)) << i;
  }
}

// format_double (graph/format.hpp): enough digits that the text reads back as the same double.
TEST(Format, ADoubleReadsBackExactly) {
  EXPECT_EQ(format_double(0.1), "0.10000000000000001");
  EXPECT_EQ(format_double(2), "2");
  for (double v : {1.0 / 3, -1e-300, 6.02214076e23}) {
    EXPECT_EQ(std::strtod(format_double(v).c_str(), nullptr), v) << format_double(v);
  }
}

}  // namespace
}  // namespace tbgrad
