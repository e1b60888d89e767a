#include "nn/models.hpp"

#include <algorithm>

#include "nn/layers.hpp"
#include "ops/conv2d.hpp"
#include "ops/dropout.hpp"
#include "ops/elementwise.hpp"
#include "ops/matmul.hpp"
#include "ops/pool2d.hpp"
#include "ops/shape.hpp"
#include "ops/softmax.hpp"

namespace tbgrad::nn {

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"seed", "seed-nopool", "lenet5", "resnet"};
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
  // A convolution without bias (its weight "<name>.w"), then batch norm "<bn>".
  Value conv_bn(Value x, const std::string& name, const std::string& bn, std::int64_t out,
                std::int64_t k, Conv2dOptions o) {
    const std::int64_t in = x.shape()[1];
    Value w = store.param(g, name + ".w", Shape{out, in, k, k}, g.dtype());
    Value c = keep(conv2d(x, w, o), name);
    return keep(batch_norm_layer(g, store, bn, c), bn);
  }
  // A residual block (scripts/pytorch_mnist.py's Block): conv 3x3 (stride) -> BN -> ReLU ->
  // conv 3x3 -> BN, plus the skip (x, or conv 1x1 (stride) -> BN where channels or stride
  // change), then ReLU.
  Value block(Value x, const std::string& name, std::int64_t out, std::int64_t stride) {
    Value h = conv_bn(x, name + ".conv1", name + ".bn1", out, 3,
                      {.stride = stride, .padding = 1});
    h = keep(relu(h), name + ".bn1.relu");
    h = conv_bn(h, name + ".conv2", name + ".bn2", out, 3, {.stride = 1, .padding = 1});
    Value skip = x;
    if (x.shape()[1] != out || stride != 1) {
      skip = conv_bn(x, name + ".project", name + ".project_bn", out, 1,
                     {.stride = stride, .padding = 0});
    }
    return keep(relu(add(h, skip)), name + ".relu");
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
  } else if (model == "resnet") {
    // scripts/pytorch_mnist.py's resnet: stem conv 3x3 1 -> 16 (no bias) -> BN -> ReLU; three
    // stages of two residual blocks (16, 32, 64 channels; stride 2 at the first block of stages
    // 2 and 3: 28 -> 14 -> 7); global average pooling; dropout 0.1; linear 64 -> 10.
    h = b.conv_bn(net.images, "stem", "stem_bn", 16, 3, {.stride = 1, .padding = 1});
    h = b.keep(relu(h), "stem_bn.relu");                                  // [B, 16, 28, 28]
    const std::int64_t widths[3] = {16, 32, 64};
    for (int stage = 0; stage < 3; ++stage) {
      for (int i = 0; i < 2; ++i) {
        const std::int64_t stride = stage > 0 && i == 0 ? 2 : 1;
        h = b.block(h, "blocks." + std::to_string(stage * 2 + i), widths[stage], stride);
      }
    }                                                                     // [B, 64, 7, 7]
    h = b.keep(flatten(global_avg_pool2d(h)), "pool");                    // [B, 64]
    h = b.keep(dropout(h, 0.1), "dropout");
    h = b.fc(h, "fc", 10);
  } else {
    throw Error("unknown model '" + model + "' (expected seed, seed-nopool, lenet5 or resnet)");
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
