#include "nn/models.hpp"

#include <algorithm>

#include "ops/conv2d.hpp"
#include "ops/elementwise.hpp"
#include "ops/matmul.hpp"
#include "ops/pool2d.hpp"
#include "ops/shape.hpp"
#include "ops/softmax.hpp"

namespace tbgrad::nn {

Value ParamStore::param(Graph& g, const std::string& name, Shape shape, DType dtype) {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] != name) continue;
    if (!(tensors_[i].shape() == shape) || tensors_[i].dtype() != dtype) {
      throw Error("parameter " + name + " exists as " + tensors_[i].shape().str() +
                  ", requested as " + shape.str());
    }
    return g.param(name, tensors_[i]);
  }
  names_.push_back(name);
  tensors_.emplace_back(shape, dtype);
  return g.param(name, tensors_.back());
}

const Tensor* ParamStore::find(const std::string& name) const {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return &tensors_[i];
  }
  return nullptr;
}

std::int64_t ParamStore::count() const {
  std::int64_t n = 0;
  for (const Tensor& t : tensors_) n += t.numel();
  return n;
}

Init parse_init(const std::string& name) {
  if (name == "xavier") return Init::kXavierUniform;
  if (name == "he") return Init::kHeNormal;
  if (name == "uniform") return Init::kUniform;
  if (name == "normal") return Init::kNormal;
  throw Error("unknown initializer '" + name + "' (expected xavier, he, uniform or normal)");
}

const char* init_name(Init init) {
  switch (init) {
    case Init::kXavierUniform:
      return "xavier";
    case Init::kHeNormal:
      return "he";
    case Init::kUniform:
      return "uniform";
    case Init::kNormal:
      return "normal";
  }
  return "?";
}

void initialize(const ParamStore& store, Init init, Rng& rng) {
  for (const Tensor& t : store.tensors()) {
    if (t.shape().rank() < 2) {
      t.fill(0.0);
      continue;
    }
    switch (init) {
      case Init::kXavierUniform:
        xavier_uniform(t, rng);
        break;
      case Init::kHeNormal:
        he_normal(t, rng);
        break;
      case Init::kUniform:
        uniform(t, -1.0, 1.0, rng);
        break;
      case Init::kNormal:
        normal(t, 0.0, 1.0, rng);
        break;
    }
  }
}

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
    Value y = keep(linear(x, w, b), name);
    net.linears.push_back({x, y, index_of(name + ".w"), index_of(name + ".b")});
    return y;
  }
  // Position of parameter `name` in the store (and so in net.params).
  std::size_t index_of(const std::string& name) const {
    const auto& names = store.names();
    return static_cast<std::size_t>(std::find(names.begin(), names.end(), name) - names.begin());
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

}  // namespace tbgrad::nn
