// SIMD target selection (graph/isa.hpp): the cap, its errors, and what holds on and across
// targets (docs/design.md, Determinism). The op tests themselves run once per target
// (tests/CMakeLists.txt).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <tbgrad.hpp>
#include <vector>

namespace tbgrad {
namespace {

// Restores the uncapped target when a test ends.
struct CapScope {
  explicit CapScope(const std::string& name) { set_max_isa(name); }
  ~CapScope() { set_max_isa("best"); }
  CapScope(const CapScope&) = delete;
  CapScope& operator=(const CapScope&) = delete;
};

Tensor random_tensor(Shape shape, std::uint64_t seed) {
  Tensor t(shape, DType::kF32);
  nn::Rng rng(seed);
  nn::uniform(t, -1, 1, rng);
  return t;
}

std::vector<std::byte> bytes(const Tensor& t) {
  const auto* p = static_cast<const std::byte*>(t.raw());
  return std::vector<std::byte>(p, p + t.nbytes());
}

TEST(Isa, KnownTargetsAreTheArchitecturesBestFirst) {
  const std::vector<std::string> known = known_isas();
  ASSERT_FALSE(known.empty());
#if defined(__x86_64__)
  EXPECT_EQ(known.back(), "scalar");
#endif
#if defined(__x86_64__) && !defined(TBGRAD_TEST_NATIVE)
  EXPECT_EQ(known, (std::vector<std::string>{"avx512", "avx2", "sse4", "scalar"}));
#endif
#if defined(__aarch64__)
  // NEON is AArch64's baseline: the lowest target, and no scalar one is compiled.
  EXPECT_EQ(known.back(), "neon");
#endif
}

TEST(Isa, SupportedTargetsAreKnownOnesInTheSameOrder) {
  const std::vector<std::string> known = known_isas(), supported = supported_isas();
  ASSERT_FALSE(supported.empty());
  auto k = known.begin();
  for (const std::string& s : supported) {
    k = std::find(k, known.end(), s);
    ASSERT_NE(k, known.end()) << s << " is not known, or out of order";
  }
}

TEST(Isa, TheCapSelectsEachSupportedTargetAndBestLiftsIt) {
  const std::vector<std::string> supported = supported_isas();
  for (const std::string& t : supported) {
    set_max_isa(t);
    EXPECT_EQ(isa(), t);
  }
  set_max_isa("best");
  EXPECT_EQ(isa(), supported.front());
  set_max_isa(supported.back());
  set_max_isa("");
  EXPECT_EQ(isa(), supported.front());
}

TEST(Isa, AnUnknownTargetIsAClearErrorAndKeepsTheCap) {
  const std::string before = isa();
  try {
    set_max_isa("avx9");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("unknown SIMD target 'avx9'"), std::string::npos) << m;
    for (const std::string& name : known_isas()) {  // lists the accepted names
      EXPECT_NE(m.find(name), std::string::npos) << m;
    }
  }
  EXPECT_EQ(isa(), before);
}

// One run of a small CNN's loss and every gradient, as raw bytes.
std::vector<std::vector<std::byte>> cnn_step(int threads) {
  ThreadScope scope(threads);
  Graph g;
  const std::int64_t n = 12;
  Value x = g.input("x", {n, 2, 13, 13});
  Value y = g.input_labels("y", {n});
  Value w1 = g.param("w1", {5, 2, 3, 3}), b1 = g.param("b1", {5});
  Value w2 = g.param("w2", {3, 5, 2, 2}), b2 = g.param("b2", {3});
  Value f = g.param("f", {10, std::int64_t{3} * 5 * 5}), c = g.param("c", {10});
  Value h = relu(conv2d(x, w1, b1, {.stride = 1, .padding = 1}));  // [12, 5, 13, 13]
  h = avg_pool2d(h, {.kernel = 3, .stride = 1});                     // [12, 5, 11, 11]
  h = relu(conv2d(h, w2, b2, {.stride = 2, .padding = 0}));          // [12, 3, 5, 5]
  Value loss = softmax_cross_entropy(linear(flatten(h), f, c), y);
  std::vector<Value> params = {w1, b1, w2, b2, f, c};
  auto grads = grad(loss, params);
  Executor ex(g, {loss, grads});
  std::uint64_t seed = 1;
  for (Value p : params) {
    nn::Rng rng(++seed);
    nn::uniform(g.value(p), -0.5, 0.5, rng);  // the parameter's own storage
  }
  Tensor xs = random_tensor(x.shape(), 99);
  Tensor labels(Shape{n}, DType::kI32);
  for (std::int64_t i = 0; i < n; ++i) labels.set(i, static_cast<double>(i % 10));
  ex.bind(x, xs).bind(y, labels).run();
  std::vector<std::vector<std::byte>> out = {bytes(ex[loss])};
  for (Value gv : grads) out.push_back(bytes(ex[gv]));
  return out;
}

TEST(Isa, EveryTargetGivesTheSameBitsForAnyThreadCount) {
  for (const std::string& t : supported_isas()) {
    CapScope cap(t);
    const auto one = cnn_step(1);
    for (int threads : {2, 3}) {
      EXPECT_TRUE(cnn_step(threads) == one) << t << " with " << threads << " threads";
    }
  }
}

// Matmul and the convolution's forward pass compute each output element as one chain of fused
// multiply-adds in a fixed order, whatever the vector width: the FMA targets agree bit for bit.
TEST(Isa, FmaTargetsAgreeBitForBitOnMatmulAndConvolution) {
  std::vector<std::string> fma;
  for (const std::string& t : supported_isas()) {
    if (t == "avx512" || t == "avx2") fma.push_back(t);
  }
  if (fma.size() < 2) GTEST_SKIP() << "needs a CPU with both AVX-512 and AVX2";
  auto outputs = [] {
    Graph g;
    Value a = g.input("a", {37, 53}), b = g.input("b", {53, 29}), bt = g.input("bt", {29, 53});
    Value x = g.input("x", {3, 2, 17, 19}), k = g.input("k", {7, 2, 3, 4});
    std::vector<Value> outs = {matmul(a, b), linear(a, bt), matmul(bt, a, {.transpose_b = true}),
                               conv2d(x, k, {.stride = 1, .padding = 1}),
                               conv2d(x, k, {.stride = 2, .padding = 0})};
    Executor ex(g, outs);
    Tensor ta = random_tensor(a.shape(), 1), tb = random_tensor(b.shape(), 2),
           tbt = random_tensor(bt.shape(), 3), tx = random_tensor(x.shape(), 4),
           tk = random_tensor(k.shape(), 5);
    ex.bind(a, ta).bind(b, tb).bind(bt, tbt).bind(x, tx).bind(k, tk).run();
    std::vector<std::vector<std::byte>> r;
    for (Value v : outs) r.push_back(bytes(ex[v]));
    return r;
  };
  std::vector<std::vector<std::vector<std::byte>>> per_target;
  for (const std::string& t : fma) {
    CapScope cap(t);
    per_target.push_back(outputs());
  }
  for (std::size_t i = 0; i < per_target[0].size(); ++i) {
    EXPECT_TRUE(per_target[1][i] == per_target[0][i]) << "output " << i;
  }
}

}  // namespace
}  // namespace tbgrad
