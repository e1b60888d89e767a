// The library under hostile use (issue 13, docs/reliability.md "Sizes" and "Threads"): sizes
// that overflow, tensors without storage, out-of-range indices, NaN in max pooling, thread
// counts out of bounds, and executors shared between threads. Each test names the defect it
// guards; none depends on timing (threads meet at explicit gates).
#include <gtest/gtest.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <string>
#include <tbgrad.hpp>
#include <thread>

namespace tbgrad {
namespace {

constexpr std::int64_t k31 = std::int64_t{1} << 31;
constexpr std::int64_t k32 = std::int64_t{1} << 32;

// Expects `fn` to throw ShapeError whose message contains `needle`.
template <typename Fn>
void expect_shape_error(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected a ShapeError containing '" << needle << "'";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- sizes (item 7)

TEST(Sizes, ATensorWhoseByteSizeOverflowsIsAShapeErrorNotAZeroByteTensor) {
  // 2^62 elements of 4 bytes: the byte count wrapped to 0 and relu over it crashed.
  expect_shape_error([] { Tensor t(Shape{k31, k31}, DType::kF32); }, "element count overflows");
  Graph g;
  expect_shape_error([&] { relu(g.input("x", {k31, k31})); }, "element count overflows");
}

TEST(Sizes, AShapeWhoseElementCountOverflowsInt64IsAShapeError) {
  expect_shape_error([] { (void)Shape{k32, k32}; }, "[4294967296,4294967296]");
  // A zero dimension makes the count 0 whatever the others are.
  EXPECT_EQ((Shape{k32, k32, 0}.numel()), 0);
  EXPECT_EQ((Shape{0, k32, k32}.numel()), 0);
}

TEST(Sizes, Conv2dPaddingThatOverflowsThePaddedInputIsAShapeError) {
  Graph g;
  Value x = g.input("x", {1, 1, 28, 28});
  Value w = g.param("w", {1, 1, 3, 3});
  expect_shape_error([&] { conv2d(x, w, {.stride = 1, .padding = 1 << 30}); },
                     "conv2d: padded height");
  // Representable geometry whose padded buffer is not: 2^29 padding on both axes.
  expect_shape_error([&] { conv2d(x, w, {.stride = 1, .padding = 1 << 29}); },
                     "element count overflows");
}

TEST(Sizes, Conv2dKernelOutsideTheIntRangeIsAShapeErrorNotTruncated) {
  // A kernel height of 2^32 + 1 used to be truncated to 1 and accepted. An input holds the
  // weight so that nothing allocates its 16 GiB.
  Graph g;
  Value x = g.input("x", {1, 1, 4, 4});
  Value w = g.input("w", {1, 1, k32 + 1, 1});
  expect_shape_error([&] { conv2d(x, w); },
                     "conv2d: kernel height 4294967297 is outside the int range (at most "
                     "2147483647); input x ([1,1,4,4]), weight w ([1,1,4294967297,1])");
  Value wide = g.input("wide", {1, 1, 1, k32 + 1});
  expect_shape_error([&] { conv2d(x, wide, {.padding = 1}); },
                     "conv2d: kernel width 4294967297 is outside the int range");
  // The gradient kernels' rules take the weight as a shape: nothing of that size exists.
  Value gy = g.input("gy", {1, 1, 1, 1});
  expect_shape_error(
      [&] {
        conv2d_backward_weight(x, gy, Shape{1, 1, k32 + 1, 1}, {});
      },
      "conv2d_backward_weight: kernel height 4294967297 is outside the int range "
      "(at most 2147483647); input x ([1,1,4,4]), weight [1,1,4294967297,1]");
  expect_shape_error(
      [&] {
        conv2d_backward_input(gy, w, Shape{1, 1, 4, 4}, {});
      },
      "conv2d_backward_input: kernel height 4294967297 is outside the int range");
}

TEST(Sizes, Conv2dKernelWhoseAreaOverflowsIntIsAShapeError) {
  // 50000 x 50000 taps: each side fits an int, their product does not (the weight gradient
  // counts taps in int, so it would have wrapped).
  Graph g;
  Value x = g.input("x", {1, 1, 50000, 50000});
  Value w = g.input("w", {1, 1, 50000, 50000});
  expect_shape_error([&] { conv2d(x, w); },
                     "conv2d: kernel 50000x50000 has 2500000000 elements, more than the int range "
                     "allows (2147483647); input x ([1,1,50000,50000]), weight w "
                     "([1,1,50000,50000])");
}

TEST(Sizes, Conv2dWhoseOutputOverflowsIsAShapeErrorNamingTheOp) {
  // [2^20, 2^41, 1, 1]: the output's Shape refused it, but without saying which op made it.
  Graph g;
  Value x = g.input("x", {1 << 20, 1, 1, 1});
  Value w = g.input("w", {std::int64_t{1} << 41, 1, 1, 1});
  expect_shape_error([&] { conv2d(x, w); },
                     "conv2d: the element count overflows (more than 1152921504606846975 "
                     "elements); input x ([1048576,1,1,1]), weight w ([2199023255552,1,1,1])");
}

TEST(Sizes, Conv2dWhoseWorkspaceOverflowsIsAShapeErrorNotAWrappedSize) {
  // Every tensor is countable (output [2^20, 2^38, 1, 1]), but the stride-1 kernel's wide
  // output, [N, OC, OH * WP + ...] with WP = 2^20, is about 2^78 elements: its size in bytes
  // wrapped in int64 when the executor asked for it.
  Graph g;
  Value x = g.input("x", {1 << 20, 1, 1, 1 << 20});
  Value w = g.input("w", {std::int64_t{1} << 38, 1, 1, 1 << 20});
  expect_shape_error([&] { conv2d(x, w); },
                     "conv2d workspace: the element count overflows (more than "
                     "1152921504606846975 elements); input x ([1048576,1,1,1048576]), weight w "
                     "([274877906944,1,1,1048576])");
  // The weight gradient's partial sums [chunks, OC, IC, KH, KW, lanes]: 2^13 * 2^45 * 16.
  Value x2 = g.input("x2", {1 << 14, 1, 1, 1});
  Value gy = g.input("gy", {1 << 14, std::int64_t{1} << 45, 1, 1});
  expect_shape_error(
      [&] {
        conv2d_backward_weight(x2, gy, Shape{std::int64_t{1} << 45, 1, 1, 1}, {});
      },
      "conv2d_backward_weight workspace: the element count overflows");
}

TEST(Sizes, PoolingKernelWhoseAreaOverflowsIntIsAShapeErrorNotBadAlloc) {
  // 65536 x 65536 = 2^32: average pooling's divisor KH*KW wrapped in int, and the executor
  // then asked for a workspace of 3 * 65535 * 65536 elements (std::bad_alloc). Now the op
  // refuses it when it is created; nothing is allocated.
  Graph g;
  Value x = g.input("x", {1, 1, 65536, 65536});
  expect_shape_error([&] { avg_pool2d(x, 65536); },
                     "avg_pool2d: kernel 65536x65536 has 4294967296 elements, more than the int "
                     "range allows (2147483647); input x ([1,1,65536,65536])");
  expect_shape_error(
      [&] {
        max_pool2d(x, {.kernel = {46341, 65536}});
      },
      "max_pool2d: kernel 46341x65536 has 3037003776 elements");
  // The same window over a one-pixel image padded by half the kernel.
  Value pixel = g.input("pixel", {1, 1, 1, 1});
  expect_shape_error([&] { avg_pool2d(pixel, {.kernel = 65536, .padding = 32768}); },
                     "avg_pool2d: kernel 65536x65536 has 4294967296 elements");
  Value gy = g.input("gy", {1, 1, 1, 1});
  expect_shape_error(
      [&] {
        avg_pool2d_backward(gy, Shape{1, 1, 65536, 65536}, {.kernel = 65536});
      },
      "avg_pool2d_backward: kernel 65536x65536 has 4294967296 elements, more than the int "
      "range allows (2147483647); input [1,1,65536,65536]");
  // 46340 x 46340 fits an int: the rule refuses no window it need not.
  EXPECT_EQ(avg_pool2d(x, 46340).shape(), (Shape{1, 1, 1, 1}));
}

TEST(Sizes, PoolingPaddingOfIntMaxIsAShapeErrorNotAnOverflow) {
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8});
  for (int padding : {INT_MAX, INT_MAX / 2 + 1, 2}) {
    SCOPED_TRACE(padding);
    expect_shape_error([&] { avg_pool2d(x, {.kernel = 2, .stride = 2, .padding = padding}); },
                       "padding must be between 0 and half the kernel");
    expect_shape_error([&] { max_pool2d(x, {.kernel = 2, .stride = 2, .padding = padding}); },
                       "padding must be between 0 and half the kernel");
  }
  // The largest legal padding of a huge kernel does not fit an int once doubled and added.
  expect_shape_error(
      [&] {
        avg_pool2d(x, {.kernel = {INT_MAX, 1}, .stride = 1, .padding = {INT_MAX / 2, 0}});
      },
      "padded height");
}

TEST(Sizes, APoolingKernelSizeOutsideTheIntRangeIsAShapeErrorNotTruncated) {
  // max_pool2d(x, k) with a 64-bit k of 2^32 + 2 would have pooled 2x2 windows.
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8});
  expect_shape_error([&] { max_pool2d(x, k32 + 2); },
                     "max_pool2d: kernel 4294967298 is outside the int range (at most 2147483647), "
                     "input x ([1,1,8,8])");
  expect_shape_error([&] { avg_pool2d(x, k32 + 2); }, "avg_pool2d: kernel 4294967298");
  expect_shape_error([&] { avg_pool2d(x, std::uint64_t{1} << 63); }, "9223372036854775808");
  expect_shape_error([&] { max_pool2d(x, -k32); }, "kernel -4294967296");
}

TEST(Sizes, ReshapeWhoseKnownDimensionsOverflowIsAShapeError) {
  // 7 * 7905747460161236407 = 1 (mod 2^64): the product of the known dimensions wrapped to 1,
  // so -1 became 4 and a [4, 7, 7905747460161236407] "reshape" of four elements was accepted.
  Graph g;
  Value x = g.input("x", {4});
  expect_shape_error(
      [&] {
        reshape(x, {-1, 7, 7905747460161236407});
      },
      "reshape: the element count overflows");
  expect_shape_error([&] { reshape(x, {7, 7905747460161236407, 4}); }, "element count overflows");
}

// ---------------------------------------------------------------- matmul (item 8)

TEST(Matmul, BothTransposedWithAnEmptyOperandGivesAnEmptyResultInsteadOfSigfpe) {
  Graph g;
  Value a = g.input("a", {3, 2});
  Value b = g.input("b", {0, 3});
  Value c = matmul(a, b, {.transpose_a = true, .transpose_b = true});  // [2, 3] x [3, 0]
  EXPECT_EQ(c.shape(), (Shape{2, 0}));
  Executor ex(g, {c});
  Tensor ta(Shape{3, 2}, DType::kF32), tb(Shape{0, 3}, DType::kF32);
  ex.bind(a, ta).bind(b, tb).run();
  EXPECT_EQ(ex[c].numel(), 0);
}

TEST(Matmul, AnEmptyInnerDimensionGivesZeros) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(std::to_string(ta) + std::to_string(tb));
      Graph g;
      Value a = g.input("a", ta ? Shape{0, 2} : Shape{2, 0});
      Value b = g.input("b", tb ? Shape{3, 0} : Shape{0, 3});
      Value c = matmul(a, b, {.transpose_a = ta, .transpose_b = tb});
      Executor ex(g, {c});
      Tensor at(a.shape(), DType::kF32), bt(b.shape(), DType::kF32);
      ex.bind(a, at).bind(b, bt).run();
      ASSERT_EQ(ex[c].shape(), (Shape{2, 3}));
      for (std::int64_t i = 0; i < 6; ++i) EXPECT_EQ(ex[c].at(i), 0.0);
    }
  }
}

TEST(Matmul, BatchedWithAnEmptyInnerDimensionGivesZerosAndWithAnEmptyBatchNothing) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(std::to_string(ta) + std::to_string(tb));
      Graph g;
      Value a = g.input("a", ta ? Shape{2, 1, 0, 2} : Shape{2, 1, 2, 0});
      Value b = g.input("b", tb ? Shape{4, 3, 0} : Shape{4, 0, 3});
      Value c = matmul(a, b, {.transpose_a = ta, .transpose_b = tb});
      Value e = matmul(g.input("e", {0, 2, 5}), g.input("f", {5, 3}));  // one 2-D product
      Value e2 = matmul(g.input("e2", {3, 0, 5, 2}), g.input("f2", {1, 2, 3}));
      Executor ex(g, {c, e, e2});
      for (const char* name : {"a", "b", "e", "f", "e2", "f2"}) {
        const Value v = g.find(name);
        ex.bind(v, Tensor(v.shape(), DType::kF32));
      }
      ex.run();
      ASSERT_EQ(ex[c].shape(), (Shape{2, 4, 2, 3}));
      for (std::int64_t i = 0; i < ex[c].numel(); ++i) EXPECT_EQ(ex[c].at(i), 0.0);
      EXPECT_EQ(ex[e].shape(), (Shape{0, 2, 3}));
      EXPECT_EQ(ex[e2].shape(), (Shape{3, 0, 5, 3}));
    }
  }
}

// ---------------------------------------------------------------- tensors (items 9, 12)

TEST(Tensors, ADefaultTensorIsRefusedAsInputParameterOrConstantStorage) {
  // A default Tensor has rank 0 (the shape of a scalar) and no storage: it passed the shape
  // check of a scalar input and was dereferenced as null in run().
  Graph g;
  Value x = g.input("x", Shape{});
  Value y = relu(x);
  Executor ex(g, {y});
  EXPECT_THROW(ex.bind(x, Tensor()), Error);
  EXPECT_THROW(ex.run(), Error);  // still unbound
  EXPECT_THROW(g.param("p", Tensor()), Error);
  EXPECT_THROW(g.constant(Tensor()), Error);
  EXPECT_THROW(Tensor::view(Shape{2}, DType::kF32, nullptr), Error);
}

TEST(Tensors, AtAndSetCheckTheIndex) {
  Tensor t(Shape{2, 3}, DType::kF64);
  t.set(5, 1.5);
  EXPECT_EQ(t.at(5), 1.5);
  for (std::int64_t i : {std::int64_t{6}, std::int64_t{-1}, std::int64_t{1} << 40}) {
    SCOPED_TRACE(i);
    EXPECT_THROW(t.at(i), Error);
    EXPECT_THROW(t.set(i, 0), Error);
  }
  try {
    t.at(6);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 6 is out of range"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tensor().at(0), Error);
  EXPECT_THROW(Tensor().fill(0), Error);
  EXPECT_THROW(Tensor().clone(), Error);
}

// ---------------------------------------------------------------- max pooling and NaN (item 17)

TEST(MaxPool, ANaNAnywhereInTheWindowPropagatesLikePyTorch) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int at = 0; at < 4; ++at) {
    SCOPED_TRACE(at);
    Graph g(DType::kF64);
    Value x = g.input("x", {1, 1, 2, 2});
    Value y = max_pool2d(x, {.kernel = 2});
    Value dx = grad(sum(y), x);
    Executor ex(g, {y, dx});
    Tensor t(Shape{1, 1, 2, 2}, DType::kF64);
    for (int i = 0; i < 4; ++i) t.set(i, i == at ? nan : 10 + i);
    ex.bind(x, t).run();
    EXPECT_TRUE(std::isnan(ex[y].at(0))) << "got " << ex[y].at(0);
    // The gradient goes to the NaN, as to any maximum.
    for (int i = 0; i < 4; ++i) EXPECT_EQ(ex[dx].at(i), i == at ? 1.0 : 0.0) << i;
  }
}

// ---------------------------------------------------------------- threads (items 5, 6, 10)

TEST(Threads, AThreadCountOutsideTheBoundIsAnErrorAndChangesNothing) {
  ThreadScope scope(2);
  for (int n : {-1, kMaxThreads + 1, 100000, INT_MAX}) {
    SCOPED_TRACE(n);
    try {
      set_num_threads(n);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("between 0 (the default) and 1024"), std::string::npos)
          << e.what();
    }
    EXPECT_EQ(num_threads(), 2);
  }
}

// One gate a test thread opens and another waits at: explicit handshakes, no sleeps.
class Gate {
 public:
  void open() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Copies its input; the first call opens `entered` and then waits at `proceed`, so a test can
// act while an executor is inside run().
class PausingCopy final : public Op {
 public:
  PausingCopy(Gate* entered, Gate* proceed) : entered_(entered), proceed_(proceed) {}
  const char* name() const override { return "pausing_copy"; }
  void forward(const KernelContext& ctx) const override {
    if (calls_.fetch_add(1) == 0) {
      entered_->open();
      proceed_->wait();
    }
    ctx.output.copy_from(ctx.inputs[0]);
  }

 private:
  Gate* entered_;
  Gate* proceed_;
  mutable std::atomic<int> calls_{0};
};

struct PausingGraph {
  Gate entered, proceed;
  Graph g;
  Value x = g.input("x", {4});
  Value y;
  Tensor input{Shape{4}, DType::kF32};
  PausingGraph() {
    Value ins[] = {x};
    Value copied =
        g.add_op(std::make_shared<PausingCopy>(&entered, &proceed), ins, x.shape(), x.dtype());
    y = add(copied, copied);
    for (int i = 0; i < 4; ++i) input.set(i, i + 1);
  }
  void expect_doubled(const Executor& ex) const {
    for (int i = 0; i < 4; ++i) EXPECT_EQ(ex[y].at(i), 2.0 * (i + 1));
  }
};

TEST(Threads, ChangingTheThreadCountWhileAnExecutorRunsIsSafe) {
  // set_num_threads freed the arena under the running executor (SEGV in Release,
  // heap-use-after-free under ASan). Now the run keeps the arena it started in.
  ThreadScope scope(2);
  PausingGraph p;
  Executor ex(p.g, {p.y});
  ex.bind(p.x, p.input);
  std::thread runner([&] { ex.run(); });
  p.entered.wait();
  set_num_threads(3);
  set_num_threads(1);
  set_num_threads(2);
  p.proceed.open();
  runner.join();
  p.expect_doubled(ex);
  ex.run();  // in the new arena
  p.expect_doubled(ex);
}

TEST(Threads, OneExecutorRunFromTwoThreadsAtOnceIsAnError) {
  // Two threads in one executor overwrote each other's intermediate values, silently. Now the
  // second caller gets an error naming the rule.
  ThreadScope scope(2);
  PausingGraph p;
  Executor ex(p.g, {p.y});
  ex.bind(p.x, p.input);
  std::thread runner([&] { ex.run(); });
  p.entered.wait();
  try {
    ex.run();
    ADD_FAILURE() << "a second concurrent run was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("running on another thread"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ex.bind(p.x, p.input), Error);
  p.proceed.open();
  runner.join();
  p.expect_doubled(ex);
  ex.run();  // one at a time is fine
  p.expect_doubled(ex);
}

}  // namespace
}  // namespace tbgrad
