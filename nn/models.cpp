#include "nn/models.hpp"

#include <algorithm>

#include "ops/conv2d.hpp"
#include "ops/elementwise.hpp"
#include "ops/matmul.hpp"
#include "ops/pool2d.hpp"
#include "ops/shape.hpp"
#include "ops/softmax.hpp"

namespace tbgrad::nn {

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"seed", "seed-nopool", "lenet5"};
  return names;
}

namespace {

struct Builder {
  Graph& g;
  ParamStore& store;
  Network& net;

  Value conv(Value x, const std::string& name, std::int64_t out, std::int64_t k,
             Conv2dOptions o = {}) {
    const std::int64_t in = x.shape()[1];
    Value w = store.param(g, name + ".w", Shape{out, in, k, k}, g.dtype());
    Value b = store.param(g, name + ".b", Shape{out}, g.dtype());
    return keep(conv2d(x, w, b, o), name);
  }
  Value fc(Value x, const std::string& name, std::int64_t out) {
    Value w = store.param(g, name + ".w", Shape{out, x.shape()[1]}, g.dtype());
    Value b = store.param(g, name + ".b", Shape{out}, g.dtype());
    return keep(linear(x, w, b), name);
  }
  Value keep(Value v, std::string name) {
    net.layers.push_back({std::move(name), v});
    return v;
  }
  // The ReLU of the last layer kept, named after it.
  Value relu_of(Value v) { return keep(relu(v), net.layers.back().name + ".relu"); }
};

}  // namespace

Network build_network(const std::string& model, Graph& g, std::int64_t batch, ParamStore& store) {
  Network net;
  net.images = g.input("images", Shape{batch, 1, 28, 28});
  net.labels = g.input_labels("labels", Shape{batch});
  Builder b{g, store, net};
  Value h;
  if (model == "seed" || model == "seed-nopool") {
    // The report's network: conv 5x5x3 -> avg-pool 4/2 -> conv 3x3x5 -> avg-pool 3/1 ->
    // FC 245 -> 100 -> 64 -> 10, with ReLU after every layer but the last.
    const bool pool = model == "seed";
    h = b.relu_of(b.conv(net.images, "conv1", 3, 5));                           // [B, 3, 24, 24]
    if (pool) h = b.keep(avg_pool2d(h, {.kernel = 4, .stride = 2}), "pool1");  // [B, 3, 11, 11]
    h = b.relu_of(b.conv(h, "conv2", 5, 3));                        // [B, 5, 9, 9] / 22x22
    if (pool) h = b.keep(avg_pool2d(h, {.kernel = 3, .stride = 1}), "pool2");  // [B, 5, 7, 7]
    h = flatten(h);                                                 // [B, 245] / [B, 2420]
    h = b.relu_of(b.fc(h, "fc1", 100));
    h = b.relu_of(b.fc(h, "fc2", 64));
    h = b.fc(h, "fc3", 10);
  } else if (model == "lenet5") {
    h = b.relu_of(b.conv(net.images, "conv1", 6, 5, {.stride = 1, .padding = 2}));  // 28x28
    h = b.keep(max_pool2d(h, {.kernel = 2, .stride = 2}), "pool1");                 // 14x14
    h = b.relu_of(b.conv(h, "conv2", 16, 5));                                        // 10x10
    h = b.keep(max_pool2d(h, {.kernel = 2, .stride = 2}), "pool2");                 // 5x5
    h = flatten(h);                                                                  // 400
    h = b.relu_of(b.fc(h, "fc1", 120));
    h = b.relu_of(b.fc(h, "fc2", 84));
    h = b.fc(h, "fc3", 10);
  } else {
    throw Error("unknown model '" + model + "' (expected seed, seed-nopool or lenet5)");
  }
  net.logits = h;
  net.loss = softmax_cross_entropy(net.logits, net.labels);
  for (const std::string& name : store.names()) net.params.push_back(g.find(name));
  return net;
}

ModelFn model_fn(const std::string& model) {
  return [model](Graph& g, ParamStore& store, std::int64_t batch) {
    const Network net = build_network(model, g, batch, store);
    return ModelGraph{net.images, net.labels, net.loss, net.logits};
  };
}

}  // namespace tbgrad::nn
