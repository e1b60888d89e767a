// Optimizers: update parameters in place from their gradients.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tbgrad/graph/tensor.hpp"

namespace tbgrad::nn {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // grads[i] is the gradient of params[i]. Does not allocate. Large parameters are split over
  // the threads; under a SerialScope the whole step runs on the calling thread.
  void step(std::span<const Tensor> grads);
  virtual const char* name() const = 0;
  // An optimizer of the same kind and hyperparameters (learning rate included) for `params`,
  // with fresh state: how a data-parallel step equips its replicas of the weights.
  virtual std::unique_ptr<Optimizer> clone_for(std::vector<Tensor> params) const = 0;

  double learning_rate() const { return lr_; }
  void set_learning_rate(double lr) { lr_ = lr; }
  std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t steps) { steps_ = steps; }
  // Per-parameter state tensors (velocity; Adam's moments), named "<kind>.<index>", for
  // checkpoints. Writing into them restores the state.
  virtual std::vector<std::pair<std::string, Tensor>> state() const { return {}; }

 protected:
  Optimizer(std::vector<Tensor> params, double lr);
  void check(std::span<const Tensor> grads) const;
  // Updates elements [lo, hi) of parameter i as step number steps_ + 1.
  virtual void update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
                      std::int64_t hi) = 0;

  std::vector<Tensor> params_;
  double lr_;
  std::int64_t steps_ = 0;
};

// p -= lr * g
class SGD final : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, double lr);
  const char* name() const override { return "sgd"; }
  std::unique_ptr<Optimizer> clone_for(std::vector<Tensor> params) const override;

 private:
  void update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
              std::int64_t hi) override;
};

// v = momentum * v + g; p -= lr * v   (PyTorch's formulation)
class Momentum final : public Optimizer {
 public:
  Momentum(std::vector<Tensor> params, double lr, double momentum = 0.9);
  const char* name() const override { return "momentum"; }
  std::unique_ptr<Optimizer> clone_for(std::vector<Tensor> params) const override;
  std::vector<std::pair<std::string, Tensor>> state() const override;

 private:
  void update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
              std::int64_t hi) override;
  double momentum_;
  std::vector<Tensor> velocity_;
};

// Kingma & Ba 2015, with bias correction.
class Adam final : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, double lr, double beta1 = 0.9, double beta2 = 0.999,
       double eps = 1e-8);
  const char* name() const override { return "adam"; }
  std::unique_ptr<Optimizer> clone_for(std::vector<Tensor> params) const override;
  std::vector<std::pair<std::string, Tensor>> state() const override;

 private:
  void update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
              std::int64_t hi) override;
  double beta1_, beta2_, eps_;
  std::vector<Tensor> m_, v_;
};

// "sgd", "momentum" or "adam"; throws tbgrad::Error otherwise.
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<Tensor> params,
                                          double lr);

}  // namespace tbgrad::nn
