// The trainer against a plain whole-batch step (tests/random_net.hpp): first every way a graph
// input can meet a gradient that contracts over the batch (a flat input fed straight into
// linear crashed the micro-batched step), then random networks from the op catalogue.
//
// TBGRAD_TRAINER_DIFF_NETS=N tests N random networks instead of the suite's 300 (the long mode:
// scripts/test_trainer_diff.sh), from seed TBGRAD_TRAINER_DIFF_SEED (default 1) on. A failure
// names the network's seed: TBGRAD_TRAINER_DIFF_SEED=s TBGRAD_TRAINER_DIFF_NETS=1 reruns it
// alone.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <tbgrad.hpp>
#include <vector>

#include "tests/random_net.hpp"

namespace tbgrad::testing {
namespace {

std::int64_t env_int(const char* name, std::int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoll(v, nullptr, 10) : fallback;
}

std::string lines(const std::vector<std::string>& bad, std::size_t most = 12) {
  std::string s;
  for (std::size_t i = 0; i < bad.size() && i < most; ++i) s += "  " + bad[i] + "\n";
  if (bad.size() > most) s += "  ... and " + std::to_string(bad.size() - most) + " more\n";
  return s;
}

// A hand-written network as a RandomNet, checked at micro-batches 1, 3, the library's and the
// whole batch, 1 to 3 threads, 2 and 3 ranks.
void expect_trains_as_whole_batch(nn::ModelFn model, std::int64_t batch, int rows, int cols,
                                  int classes) {
  RandomNet net;
  net.model = std::move(model);
  net.batch = batch;
  net.rows = rows;
  net.cols = cols;
  net.classes = classes;
  DiffOptions o;
  o.micro_batches = {0, 1, 3, batch};
  const auto bad = check_trainer(net, o);
  EXPECT_TRUE(bad.empty()) << lines(bad);
}

nn::ModelGraph classify(Graph& g, nn::ParamStore& p, std::int64_t b, Value x, Value h,
                        std::int64_t classes) {
  nn::ModelGraph m;
  m.inputs = x;
  m.labels = g.input_labels("labels", {b});
  m.outputs = linear(h, p.param(g, "head.w", {classes, h.shape()[1]}),
                     p.param(g, "head.b", {classes}));
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

// The network: [B, 784] straight into linear, at batch 64 (micro-batches of 16).
TEST(TrainerInputs, AFlatInputFedStraightIntoLinear) {
  expect_trains_as_whole_batch(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        nn::ModelGraph m;
        m.inputs = g.input("images", {b, 784});
        m.labels = g.input_labels("labels", {b});
        m.outputs = linear(m.inputs, p.param(g, "fc.w", {10, 784}), p.param(g, "fc.b", {10}));
        m.loss = softmax_cross_entropy(m.outputs, m.labels);
        return m;
      },
      64, 28, 28, 10);
}

// The other network, 784 -> 512 -> ReLU -> 10: over the library's limit for
// micro-batches by default (one graph), so micro-batches of 16 asked for.
TEST(TrainerInputs, AFlatInputIntoAWideHiddenLayerInMicroBatches) {
  RandomNet net;
  net.model = [](Graph& g, nn::ParamStore& p, std::int64_t b) {
    const Value x = g.input("images", {b, 784});
    const Value h = relu(linear(x, p.param(g, "fc1.w", {512, 784}), p.param(g, "fc1.b", {512})));
    return classify(g, p, b, x, h, 10);
  };
  net.batch = 64;
  net.rows = net.cols = 28;
  net.classes = 10;
  DiffOptions o;
  o.micro_batches = {16, 0};
  o.ranks = {2};
  const auto bad = check_trainer(net, o);
  EXPECT_TRUE(bad.empty()) << lines(bad);
}

TEST(TrainerInputs, AFlatInputIntoAHiddenLayer) {
  expect_trains_as_whole_batch(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        const Value x = g.input("images", {b, 20});
        const Value h = relu(linear(x, p.param(g, "fc1.w", {12, 20}), p.param(g, "fc1.b", {12})));
        return classify(g, p, b, x, h, 5);
      },
      10, 4, 5, 5);
}

// dW = xᵀ·dY: the input is the contraction's scaled operand.
TEST(TrainerInputs, AnInputAsAMatmulsFirstOperand) {
  expect_trains_as_whole_batch(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        const Value x = g.input("x", {b, 6});
        return classify(g, p, b, x, tanh(matmul(x, p.param(g, "w", {6, 7}))), 3);
      },
      9, 2, 3, 3);
}

// W·xᵀ: [out, B], not batch-major, then back to [B, out2].
TEST(TrainerInputs, AnInputAsAMatmulsSecondOperand) {
  expect_trains_as_whole_batch(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        const Value x = g.input("x", {b, 6});
        const Value t = matmul(p.param(g, "w1", {4, 6}), x, {.transpose_b = true});  // [4, B]
        const Value h = matmul(sigmoid(t), p.param(g, "w2", {4, 5}), {.transpose_a = true});
        return classify(g, p, b, x, h, 3);
      },
      9, 1, 6, 3);
}

TEST(TrainerInputs, AnInputPlusABroadcastBias) {
  expect_trains_as_whole_batch(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        const Value x = g.input("x", {b, 2, 3, 3});
        const Value h = relu(add(x, p.param(g, "bias", {2, 1, 1})));
        return classify(g, p, b, x, flatten(mul(h, p.param(g, "gain", {3}))), 4);
      },
      7, 6, 3, 4);
}

TEST(TrainerInputs, AnInputReadByTwoConsumers) {
  expect_trains_as_whole_batch(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        const Value x = g.input("x", {b, 8});
        const Value h = add(linear(x, p.param(g, "a", {5, 8})), linear(x, p.param(g, "c", {5, 8})));
        return classify(g, p, b, x, add(h, matmul(x, p.param(g, "d", {8, 5}))), 3);
      },
      11, 2, 4, 3);
}

// The input is the model's outputs (the scores whose argmax is the prediction), and feeds the
// loss through a fully connected layer.
TEST(TrainerInputs, AnInputThatIsAlsoTheOutput) {
  expect_trains_as_whole_batch(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        nn::ModelGraph m;
        m.inputs = g.input("x", {b, 4});
        m.labels = g.input_labels("labels", {b});
        m.outputs = m.inputs;
        m.loss = softmax_cross_entropy(linear(m.inputs, p.param(g, "w", {4, 4})), m.labels);
        return m;
      },
      10, 2, 2, 4);
}

// An attention-like block on x [B, T, D] (T = 4, D = 6), the batch axis first: q, k and v are
// stacks times a weight (one 2-D product each, their weights' gradients contracted over the
// rows), the scores and their weighted sum batched products ([B, T, T], [B, T, E]), a
// transposed-a product qᵀ·h [B, E, E], then a weight [3, E] times every example's matrix (a 2-D
// a broadcast over the batch: its gradient summed over the batch, sum_to): none of the batched
// products is a contraction over the batch.
TEST(TrainerInputs, AnAttentionBlockOfBatchedMatmuls) {
  expect_trains_as_whole_batch(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        const Value x = g.input("x", {b, 4, 6});
        const Value q = matmul(x, p.param(g, "wq", {6, 5}));
        const Value k = matmul(x, p.param(g, "wk", {6, 5}));
        const Value v = matmul(x, p.param(g, "wv", {6, 5}));
        const Value scores = matmul(q, k, {.transpose_b = true});  // [B, 4, 4]
        const Value h = matmul(softmax(scores), v);                // [B, 4, 5]
        const Value outer = matmul(q, h, {.transpose_a = true});   // [B, 5, 5]
        const Value shifted = add(outer, p.param(g, "bias", {5, 5}));
        const Value mixed = tanh(matmul(p.param(g, "mix", {3, 5}), shifted));  // [B, 3, 5]
        return classify(g, p, b, x, flatten(mixed), 3);
      },
      10, 4, 6, 3);
}

// The same block with the batched products' batch axes broadcast: a weight per head [H, 6, 5]
// against x [B, 1, T, D] gives [B, H, T, 5] (BatchedMatmulOp with a broadcast b, whose
// gradient is summed over the batch).
TEST(TrainerInputs, BatchedMatmulsWithHeadsBroadcastAgainstTheBatch) {
  expect_trains_as_whole_batch(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        const Value in = g.input("x", {b, 4, 6});
        const Value x = reshape(in, Shape{b, 1, 4, 6});
        const Value q = matmul(x, p.param(g, "wq", {2, 6, 5}));  // [B, 2, 4, 5]
        const Value k = matmul(x, p.param(g, "wk", {2, 6, 5}));
        const Value scores = matmul(q, k, {.transpose_b = true});  // [B, 2, 4, 4]
        const Value h = matmul(softmax(scores), q);                // [B, 2, 4, 5]
        return classify(g, p, b, in, flatten(h), 3);
      },
      7, 4, 6, 3);
}

// The generator must keep exercising what it was written for: each of these appears in some
// network of the first 300 seeds.
TEST(TrainerDiff, RandomNetworksTrainAsTheWholeBatchStep) {
  const std::int64_t nets = env_int("TBGRAD_TRAINER_DIFF_NETS", 300);
  const std::int64_t first = env_int("TBGRAD_TRAINER_DIFF_SEED", 1);
  const std::vector<std::string> features = {
      "linear(x,",  "matmul(x,",   "x^T)",         "conv2d(x,",   "max_pool2d(x,",
      "avg_pool2d(x,", "add(x, x)", "reuses",       "split_rows(", "merge_rows(",
      "softmax(",   "broadcast_to(", "mean(",      " = x\n",     "reshape(x, [B*C",
      "layer_norm(", "group_norm(",
      // Note [Loss split]: losses that split as means, as sums, and that keep the batch whole.
      "mse(logits, targets",  "l1(logits",  "huber(logits",  "bce_with_logits(",
      "smoothing",  "nll(log_softmax(",  "cross_entropy(logits, sum)",  "class weights"};
  std::map<std::string, int> seen;
  int failed = 0;
  for (std::int64_t seed = first; seed < first + nets; ++seed) {
    Choices c = Choices::seeded(static_cast<std::uint64_t>(seed));
    const RandomNet net = random_net(c);
    DiffOptions o;
    o.micro_batches = micro_batches_for(net.batch, c);
    o.seed = static_cast<std::uint64_t>(seed);
    for (const std::string& f : features) seen[f] += net.description.find(f) != std::string::npos;
    const auto bad = check_trainer(net, o);
    if (!bad.empty() && ++failed <= 5) {
      ADD_FAILURE() << "network of seed " << seed << " (TBGRAD_TRAINER_DIFF_SEED=" << seed
                    << " TBGRAD_TRAINER_DIFF_NETS=1 reruns it alone), " << net.description
                    << lines(bad);
    }
  }
  EXPECT_EQ(failed, 0) << "of " << nets << " networks";
  std::printf("trainer diff: %lld networks from seed %lld, %d disagreed\n",
              static_cast<long long>(nets), static_cast<long long>(first), failed);
  if (first == 1 && nets >= 300) {
    for (const std::string& f : features) EXPECT_GT(seen[f], 0) << "no network has " << f;
  }
}

}  // namespace
}  // namespace tbgrad::testing
