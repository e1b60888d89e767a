// The training-library issue's user network, for the tests and benchmarks that train it:
// conv 3x3/8 -> relu -> max-pool -> conv 3x3/16 -> relu -> max-pool -> linear 784->64 -> relu ->
// linear -> cross-entropy. examples/custom_cnn.cpp writes the same network out itself, as the
// documentation a user copies from.
#pragma once

#include <cstdint>
#include <tbgrad.hpp>

namespace tbgrad::testing {

inline nn::ModelGraph custom_cnn(Graph& g, nn::ParamStore& p, std::int64_t batch) {
  nn::ModelGraph m;
  m.inputs = g.input("images", {batch, 1, 28, 28});
  m.labels = g.input_labels("labels", {batch});
  auto h = relu(conv2d(m.inputs, p.param(g, "conv1.w", {8, 1, 3, 3}), p.param(g, "conv1.b", {8}),
                       {.padding = 1}));
  h = max_pool2d(h, 2);
  h = relu(
      conv2d(h, p.param(g, "conv2.w", {16, 8, 3, 3}), p.param(g, "conv2.b", {16}), {.padding = 1}));
  h = flatten(max_pool2d(h, 2));
  h = relu(linear(h, p.param(g, "fc1.w", {64, 784}), p.param(g, "fc1.b", {64})));
  m.outputs = linear(h, p.param(g, "fc2.w", {10, 64}), p.param(g, "fc2.b", {10}));
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

}  // namespace tbgrad::testing
