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

// The optimizers make_optimizer builds, by name: "sgd", "momentum", "adam".
const std::vector<std::string>& optimizer_names();
// The names as a message lists the choices: "sgd, momentum or adam".
const std::string& optimizer_choices();
// Throws tbgrad::Error ("unknown optimizer 'rmsprop' (expected sgd, momentum or adam)") unless
// `name` is one of optimizer_names(). The one check of an optimizer's name: make_optimizer makes
// it, and so do programs that take a name from their user or a file before building one.
void check_optimizer_name(const std::string& name);

// One of optimizer_names(); throws tbgrad::Error (check_optimizer_name's) otherwise.
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<Tensor> params,
                                          double lr);

}  // namespace tbgrad::nn
