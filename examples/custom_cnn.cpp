// A network of your own, trained on MNIST with the library's data, data-parallel step,
// evaluation and checkpoint API. Usage: example_custom_cnn [MNIST_DIR [EPOCHS [LIMIT [THREADS]]]]
// (LIMIT: train on the first LIMIT images only; 0 for all).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tbgrad.hpp>

using namespace tbgrad;

// conv 3x3/8 -> relu -> max-pool -> conv 3x3/16 -> relu -> max-pool -> linear 784->64 -> relu
// -> linear -> cross-entropy. The same function builds the graph for every batch size.
nn::ModelGraph custom_cnn(Graph& g, nn::ParamStore& p, std::int64_t batch) {
  nn::ModelGraph m;
  m.inputs = g.input("images", {batch, 1, 28, 28});
  m.labels = g.input_labels("labels", {batch});
  auto h = relu(conv2d(m.inputs, p.param(g, "conv1.w", {8, 1, 3, 3}), p.param(g, "conv1.b", {8}),
                       {.padding = 1}));  // [B, 8, 28, 28]
  h = max_pool2d(h, 2);                   // [B, 8, 14, 14]
  h = relu(conv2d(h, p.param(g, "conv2.w", {16, 8, 3, 3}), p.param(g, "conv2.b", {16}),
                  {.padding = 1}));  // [B, 16, 14, 14]
  h = flatten(max_pool2d(h, 2));     // [B, 784]
  h = relu(linear(h, p.param(g, "fc1.w", {64, 784}), p.param(g, "fc1.b", {64})));   // [B, 64]
  m.outputs = linear(h, p.param(g, "fc2.w", {10, 64}), p.param(g, "fc2.b", {10}));  // [B, 10]
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "data/mnist";
  const int epochs = argc > 2 ? std::atoi(argv[2]) : 1;
  const std::int64_t limit = argc > 3 ? std::atoll(argv[3]) : 0;
  if (argc > 4) set_num_threads(std::atoi(argv[4]));
  try {
    const data::Dataset train = data::load_split(dir, data::Split::kTrain);
    const data::Dataset test = data::load_split(dir, data::Split::kTest);

    nn::ParamStore store;
    nn::create_parameters(custom_cnn, store);  // zero-filled, then initialised
    nn::Rng rng(1);
    nn::initialize(store, nn::Init::kXavierUniform, rng);
    nn::Adam adam(store.tensors(), 1e-3);
    nn::Trainer trainer(custom_cnn, store, adam, {.batch_size = 32});
    data::Batcher batches(train, 32, limit);  // the last batch may be short
    nn::Evaluator evaluator(custom_cnn, store);

    double seconds = 0;
    for (int epoch = 1; epoch <= epochs; ++epoch) {
      const nn::EpochResult r =
          nn::train_epoch(trainer, batches, rng, {.epoch = epoch, .progress = nn::show_progress()});
      const nn::Evaluation t = evaluator.evaluate(test);
      seconds += r.seconds;
      std::printf("epoch %d: train loss %.4f, accuracy %.2f%%; test accuracy %.2f%%; %.3f s\n",
                  epoch, r.loss, 100 * r.accuracy, 100 * t.accuracy, r.seconds);
    }
    nn::save_parameters("custom_cnn.ckpt", store, &adam, {{"epoch", std::to_string(epochs)}});
    nn::ParamStore reloaded;  // a checkpoint loads back by parameter name
    nn::create_parameters(custom_cnn, reloaded);
    nn::load_parameters("custom_cnn.ckpt", reloaded);
    const double acc = nn::Evaluator(custom_cnn, reloaded).evaluate(test).accuracy;
    std::printf("reloaded checkpoint: test accuracy %.2f%%; train_seconds %.3f on %d threads\n",
                100 * acc, seconds, num_threads());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "custom_cnn: %s\n", e.what());
    return 1;
  }
  return 0;
}
