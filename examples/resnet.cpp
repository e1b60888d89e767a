// A small residual network with batch norm and dropout, trained with momentum SGD, weight decay,
// a warmup + cosine schedule stepped every step and crop/flip augmentation, all through the
// public API (the network of `tbgrad-mnist train --model resnet` and scripts/pytorch_mnist.py).
// Usage: example_resnet [MNIST_DIR [EPOCHS [LIMIT [THREADS]]]] (any MNIST-layout data set, e.g.
// Debian's dataset-fashion-mnist; LIMIT: train on the first LIMIT images only, 0 for all).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tbgrad.hpp>

using namespace tbgrad;

namespace {

// conv (no bias) -> batch norm; the batch norm's weight, bias and running statistics live in
// the store under "<name>.bn.*".
Value conv_bn(Graph& g, nn::ParamStore& p, const std::string& name, Value x, std::int64_t out,
              std::int64_t k, std::int64_t stride) {
  Value w = p.param(g, name + ".w", {out, x.shape()[1], k, k});
  Value h = conv2d(x, w, {.stride = stride, .padding = k / 2});
  return nn::batch_norm_layer(g, p, name + ".bn", h);
}

// conv 3x3 (stride) -> BN -> ReLU -> conv 3x3 -> BN, plus the skip (x, or a 1x1 projection
// -> BN where channels or stride change), then ReLU.
Value block(Graph& g, nn::ParamStore& p, const std::string& name, Value x, std::int64_t out,
            std::int64_t stride) {
  Value h = relu(conv_bn(g, p, name + ".conv1", x, out, 3, stride));
  h = conv_bn(g, p, name + ".conv2", h, out, 3, 1);
  Value skip = x.shape()[1] == out && stride == 1 ? x : conv_bn(g, p, name + ".project", x, out, 1, stride);
  return relu(add(h, skip));
}

nn::ModelGraph resnet(Graph& g, nn::ParamStore& p, std::int64_t batch) {
  nn::ModelGraph m;
  m.inputs = g.input("images", {batch, 1, 28, 28});
  m.labels = g.input_labels("labels", {batch});
  Value h = relu(conv_bn(g, p, "stem", m.inputs, 16, 3, 1));  // [B, 16, 28, 28]
  const std::int64_t widths[3] = {16, 32, 64};
  for (int stage = 0; stage < 3; ++stage) {
    for (int i = 0; i < 2; ++i) {
      const std::string name = "stage" + std::to_string(stage + 1) + "." + std::to_string(i);
      h = block(g, p, name, h, widths[stage], stage > 0 && i == 0 ? 2 : 1);
    }
  }                                                  // [B, 64, 7, 7]
  h = dropout(flatten(global_avg_pool2d(h)), 0.1);   // [B, 64]
  m.outputs = linear(h, p.param(g, "fc.w", {10, 64}), p.param(g, "fc.b", {10}));  // [B, 10]
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "data/mnist";
  const int epochs = argc > 2 ? std::atoi(argv[2]) : 1;
  const std::int64_t limit = argc > 3 ? std::atoll(argv[3]) : 0;
  if (argc > 4) set_num_threads(std::atoi(argv[4]));
  try {
    const data::Dataset train = data::load_split(dir, data::Split::kTrain);
    const data::Dataset test = data::load_split(dir, data::Split::kTest);

    nn::ParamStore store;
    nn::create_parameters(resnet, store);
    nn::Rng rng(1);
    // He-normal weights; batch norm's scales 1 and shifts 0, biases 0 (by role).
    nn::initialize(store, nn::Init::kHeNormal, rng);
    // Weight decay on the weights only: not on biases or batch norm's scales and shifts.
    nn::Momentum sgd(store.tensors(), 0.05,
                     nn::MomentumOptions{.weight_decay = 5e-4, .decay = nn::decay_mask(store)});
    nn::Trainer trainer(resnet, store, sgd,
                        {.batch_size = 32,
                         .augment = {.pad = 2, .flip = true, .seed = 1},  // crop and flip
                         .seed = 1});                                     // dropout's masks
    data::Batcher batches(train, 32, limit);
    // One epoch of linear warmup, then a half cosine to the end, stepped every step.
    const std::int64_t steps = batches.num_batches();
    nn::CosineSchedule schedule(0.05, {.warmup = steps, .total = epochs * steps});
    nn::Evaluator evaluator(resnet, store);  // evaluation mode: running statistics, no dropout

    for (int epoch = 1; epoch <= epochs; ++epoch) {
      nn::EpochOptions options{.epoch = epoch, .progress = nn::show_progress()};
      options.before_step = [&](std::int64_t, std::int64_t) { schedule.apply(sgd); };
      options.after_update = [&](std::int64_t) { schedule.step(); };
      const nn::EpochResult r = nn::train_epoch(trainer, batches, rng, options);
      if (!std::isfinite(r.loss)) throw Error("the loss is not finite");
      const nn::Evaluation t = evaluator.evaluate(test);
      std::printf("epoch %d: train loss %.4f, accuracy %.2f%%; test accuracy %.2f%%; lr %.5f; "
                  "%.3f s\n",
                  epoch, r.loss, 100 * r.accuracy, 100 * t.accuracy, sgd.learning_rate(),
                  r.seconds);
    }
    // The checkpoint holds the batch norms' running statistics (buffers) beside the weights.
    nn::save_parameters("resnet.ckpt", store, &sgd, {{"epoch", std::to_string(epochs)}});
    nn::ParamStore reloaded;
    nn::create_parameters(resnet, reloaded);
    nn::load_parameters("resnet.ckpt", reloaded);
    const double before = evaluator.evaluate(test).accuracy;
    const double after = nn::Evaluator(resnet, reloaded).evaluate(test).accuracy;
    std::printf("reloaded checkpoint: test accuracy %.2f%% (%s) on %d threads\n", 100 * after,
                after == before ? "the same" : "DIFFERENT", num_threads());
    return after == before ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "resnet: %s\n", e.what());
    return 1;
  }
}
