// One epoch (or more) of a network defined outside the library, trained through the library's
// API (data::Batcher, nn::Trainer, nn::train_epoch, nn::Evaluator), for the epoch benchmark
// (scripts/bench_library.sh, docs/performance.md):
//   custom     the network of examples/custom_cnn.cpp (issue 12's user network)
//   user-seed  the reference CNN (tbgrad-mnist --model seed) written as a user would, with its
//              parameters created in the same order, so it trains to the same bits as the app
// Usage: train_library MODEL DATA_DIR THREADS [EPOCHS [BATCH]]; SGD, lr 0.1, constant, seed 1,
// Xavier, as bench_epoch.sh runs tbgrad-mnist. Prints one JSON line.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tbgrad.hpp>

#include "tests/custom_cnn.hpp"

using namespace tbgrad;

using testing::custom_cnn;  // tests/custom_cnn.hpp

nn::ModelGraph user_seed(Graph& g, nn::ParamStore& p, std::int64_t batch) {
  nn::ModelGraph m;
  m.inputs = g.input("images", {batch, 1, 28, 28});
  m.labels = g.input_labels("labels", {batch});
  auto conv = [&](Value x, const std::string& name, std::int64_t out, std::int64_t k) {
    Value w = p.param(g, name + ".w", {out, x.shape()[1], k, k});
    Value b = p.param(g, name + ".b", {out});
    return relu(conv2d(x, w, b));
  };
  auto fc = [&](Value x, const std::string& name, std::int64_t out) {
    Value w = p.param(g, name + ".w", {out, x.shape()[1]});
    Value b = p.param(g, name + ".b", {out});
    return linear(x, w, b);
  };
  Value h =
      avg_pool2d(conv(m.inputs, "conv1", 3, 5), {.kernel = 4, .stride = 2});  // [B, 3, 11, 11]
  h = avg_pool2d(conv(h, "conv2", 5, 3), {.kernel = 3, .stride = 1});         // [B, 5, 7, 7]
  h = relu(fc(flatten(h), "fc1", 100));
  h = relu(fc(h, "fc2", 64));
  m.outputs = fc(h, "fc3", 10);
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: train_library custom|user-seed DATA_DIR THREADS [EPOCHS [BATCH]]\n");
    return 2;
  }
  const std::string name = argv[1];
  const nn::ModelFn model = name == "custom" ? nn::ModelFn(custom_cnn) : nn::ModelFn(user_seed);
  set_num_threads(std::atoi(argv[3]));
  const int epochs = argc > 4 ? std::atoi(argv[4]) : 1;
  const std::int64_t batch = argc > 5 ? std::atoll(argv[5]) : 32;
  const data::Dataset train = data::load_split(argv[2], data::Split::kTrain);
  const data::Dataset test = data::load_split(argv[2], data::Split::kTest);
  nn::Rng rng(1);
  nn::ParamStore store;
  nn::create_parameters(model, store);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer trainer(model, store, sgd, {.batch_size = batch});
  data::Batcher batches(train, batch);
  nn::Evaluator evaluator(model, store);
  double seconds = 0;
  double accuracy = 0;
  for (int e = 1; e <= epochs; ++e) {
    seconds += nn::train_epoch(trainer, batches, rng, {.epoch = e}).seconds;
    accuracy = evaluator.evaluate(test).accuracy;
  }
  std::printf(
      "{\"model\":\"%s\",\"threads\":%d,\"batch_size\":%lld,\"train_seconds\":%.6f,"
      "\"test_accuracy\":%.6f}\n",
      name.c_str(), num_threads(), static_cast<long long>(batch), seconds, accuracy);
  return 0;
}
