// Random networks from the op catalogue, and the differential test of the trainer on them: the
// ordinary suite's tests/test_trainer_diff.cpp draws them from seeds, the fuzz target
// fuzz/fuzz_trainer.cpp from a fuzzer's bytes (docs/reliability.md#the-trainer-against-a-whole-
// batch-step).
//
// A network is a short program of random layers over a pool of values, starting from its input
// ([B, F] or [B, C, H, W]): fully connected layers (weights reused at times), matmuls with
// either operand transposed, a detour through a [features, B] layout that is not batch-major,
// reshapes that give an example several rows, convolutions and pooling of random geometry,
// activations, softmaxes, dropout, batch norm (its parameters and buffers in the store),
// layer norm and group norm (with or without a weight and a bias),
// broadcasting adds and products with parameters or with another value
// of the pool (skip connections, a value added to itself), scaling, broadcast_to; then a
// linear head (or the value itself as the scores, the input included), a loss (mostly softmax
// cross-entropy; at times another of ops/loss.hpp over class labels or float targets, a mean
// or a sum, or a class-weighted mean, which the trainer keeps whole: Note [Loss split]), and at
// times a second loss term on another value. Every example is computed on its own (but
// in a network with batch norm, which the trainer keeps whole), so the trainer's micro-batches
// must give the whole batch's gradient. A new op that a model can
// use joins the generator here (a case of matrix_layer or image_layer in random_net.cpp), so
// the trainer is tested on it too.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <tbgrad.hpp>
#include <vector>

namespace tbgrad::testing {

// Where a network's choices come from: a seeded generator, or bytes (a fuzzer's input: one
// byte per choice, zeros once they run out). Each choice is a number in [0, n), n <= 256.
class Choices {
 public:
  static Choices seeded(std::uint64_t seed);
  static Choices from_bytes(std::span<const std::uint8_t> bytes);
  int pick(int n);

 private:
  std::shared_ptr<nn::Rng> rng_;
  std::span<const std::uint8_t> bytes_;
  std::size_t at_ = 0;
};

struct RandomNet {
  nn::ModelFn model;        // builds the same network for any batch size
  std::string description;  // one line per layer, at the batch size below
  int rows = 0, cols = 0;   // an example is rows * cols bytes (data::Dataset)
  int classes = 0;          // labels are in [0, classes)
  std::int64_t batch = 0;   // the batch size to train it at
  std::int64_t params = 0;  // number of parameters (tensors)
  // Float targets per example (data::Dataset::targets, [targets] each) for a model whose labels
  // are an f32 input; 0: class labels. multi_hot: each 0 or 1, otherwise in [-1, 1).
  std::int64_t targets = 0;
  bool multi_hot = false;
  // Whether the evaluator's loss (in batches) is the loss of one graph over the data set: a
  // mean or a sum over the examples (Note [Loss split]), not a class-weighted mean, say.
  bool batched_loss_exact = true;
};

// Draws a network (its batch size included) from `choices`.
RandomNet random_net(Choices& choices);

// `count` random examples of the network's size and labels below its class count (or its
// float targets).
data::Dataset random_data(const RandomNet& net, std::int64_t count, std::uint64_t seed);

struct DiffOptions {
  // Micro-batch sizes to train at (TrainerOptions::micro_batch; 0: the library's choice).
  std::vector<std::int64_t> micro_batches;
  std::vector<int> threads = {1, 2, 3};
  // Rank counts (ThreadRanks) also run, at one thread, with the first micro-batch size.
  std::vector<int> ranks = {2, 3};
  std::uint64_t seed = 1;  // of the data and the initial weights
};

// The micro-batch sizes worth testing for a batch: the library's choice, 1, one between, and
// the whole batch.
std::vector<std::int64_t> micro_batches_for(std::int64_t batch, Choices& choices);

// Trains `net` for three steps (two full batches, then a short one) with nn::Trainer and
// momentum SGD at every micro-batch size, thread count and rank count of `options`, and
// compares each step with a plain whole-batch step (one graph over the batch, grad, Executor)
// at the same weights: the loss, the correct count, every gradient and every updated weight,
// within float tolerance. Runs at one micro-batch size must agree bit for bit across thread
// and rank counts. The evaluator's loss and accuracy are compared with one graph over the data.
// Returns what disagreed, one line each (empty: all agree); an exception is reported, not
// thrown.
std::vector<std::string> check_trainer(const RandomNet& net, const DiffOptions& options);

}  // namespace tbgrad::testing
