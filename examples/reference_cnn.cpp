// The README's example: build the reference CNN, differentiate it, run a few SGD steps by hand
// (examples/custom_cnn.cpp trains a network with the library's training API instead).
#include <cstdio>
#include <tbgrad.hpp>

int main() {
  using namespace tbgrad;
  Graph g;                                           // float32
  auto x = g.input("x", {32, 1, 28, 28});            // [N, C, H, W]
  auto y = g.input_labels("y", {32});                // class indices
  auto w1 = g.param("conv1.w", {3, 1, 5, 5});
  auto b1 = g.param("conv1.b", {3});
  auto w2 = g.param("conv2.w", {5, 3, 3, 3});
  auto b2 = g.param("conv2.b", {5});
  auto f1 = g.param("fc1.w", {100, 245});
  auto c1 = g.param("fc1.b", {100});
  auto f2 = g.param("fc2.w", {64, 100});
  auto c2 = g.param("fc2.b", {64});
  auto f3 = g.param("fc3.w", {10, 64});
  auto c3 = g.param("fc3.b", {10});

  auto h = relu(conv2d(x, w1, b1, {.stride = 1, .padding = 0}));  // [32, 3, 24, 24]
  h = avg_pool2d(h, {.kernel = 4, .stride = 2});                   // [32, 3, 11, 11]
  h = relu(conv2d(h, w2, b2));                                     // [32, 5, 9, 9]
  h = avg_pool2d(h, {.kernel = 3, .stride = 1});                   // [32, 5, 7, 7]
  h = relu(linear(flatten(h), f1, c1));                            // [32, 100]
  h = relu(linear(h, f2, c2));                                     // [32, 64]
  auto logits = linear(h, f3, c3);                                 // [32, 10]
  auto loss = softmax_cross_entropy(logits, y);

  nn::Rng rng(42);
  for (Value p : g.params()) {
    if (p.shape().rank() > 1) nn::xavier_uniform(g.value(p), rng);
  }
  auto grads = grad(loss, g.params());
  Executor run(g, {loss, grads});  // plans once: order, buffers

  Tensor batch({32, 1, 28, 28}, DType::kF32);  // your images here
  Tensor labels({32}, DType::kI32);            // and their digits
  for (std::int64_t i = 0; i < batch.numel(); ++i) batch.set(i, (i % 7) / 7.0);
  for (std::int64_t i = 0; i < labels.numel(); ++i) labels.set(i, static_cast<double>(i % 10));

  std::vector<Tensor> params, grad_values;
  for (Value p : g.params()) params.push_back(g.value(p));
  for (Value gv : grads) grad_values.push_back(run[gv]);  // views, valid across runs
  nn::SGD sgd(params, 0.1);
  for (int step = 0; step < 3; ++step) {
    run.bind(x, batch).bind(y, labels).run();  // every step: no allocation
    sgd.step(grad_values);
    std::printf("step %d: loss %.4f\n", step, run[loss].at(0));
  }
  return 0;
}
