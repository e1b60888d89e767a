// Optimizers: update parameters in place from their gradients.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tbgrad/graph/tensor.hpp"

namespace tbgrad::nn {

class ParamStore;

// Note [Weight decay and clipping]: every optimizer can
//  - decay weights: SGD, Momentum and Adam add weight_decay * p to the gradient (coupled L2,
//    as torch.optim.SGD's and torch.optim.Adam's weight_decay); AdamW shrinks the weight itself,
//    p -= lr * weight_decay * p, before Adam's step (decoupled, as torch.optim.AdamW). An
//    options struct's `decay` says which parameters decay (one flag per parameter, in the
//    store's order; empty: all of them): decay_mask(store) builds the usual choice, weights
//    only (biases and normalisation scales and shifts stay undecayed).
//  - clip the gradient by its global 2-norm (set_max_grad_norm; as
//    torch.nn.utils.clip_grad_norm_ before optimizer.step()): the norm of all the parameters'
//    gradients as one vector, n; each gradient is used multiplied by
//    min(1, max_norm / (n + 1e-6)). The sum of squares runs in double over fixed blocks of each
//    gradient, added in parameter and block order, so that it does not depend on the thread
//    count. Under the Trainer every replica's optimizer is handed the same batch gradient
//    (Note [Replicas], Note [Ranks]), so every replica and every rank computes the same norm
//    and the same scale. A norm that is not finite makes the update NaN (as PyTorch's, whose
//    error_if_nonfinite defaults to false): it is never swallowed.
// The clipped gradient feeds the weight decay and the update, as in PyTorch.

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

  // Clipping by the gradient's global 2-norm (Note [Weight decay and clipping]): 0 turns it
  // off (the default); otherwise positive and finite (throws tbgrad::Error). The Trainer hands
  // it on to its replicas before every step.
  void set_max_grad_norm(double max_norm);
  double max_grad_norm() const { return max_norm_; }
  // The global 2-norm of the last step's gradients (before clipping), for logging; computed
  // only while clipping is on (0 before the first such step).
  double last_grad_norm() const { return last_norm_; }
  // The weight decay coefficient, and whether parameter i decays.
  double weight_decay() const { return weight_decay_; }
  bool decays(std::size_t i) const { return decay_.empty() || decay_[i] != 0; }
  // Per-parameter state tensors (velocity; Adam's moments), named "<kind>.<index>", for
  // checkpoints. Writing into them restores the state.
  virtual std::vector<std::pair<std::string, Tensor>> state() const { return {}; }

 protected:
  Optimizer(std::vector<Tensor> params, double lr);
  // The weight decay and its per-parameter flags (empty: every parameter), checked: a
  // coefficient that is negative or not finite, or flags that are not one per parameter,
  // throw tbgrad::Error.
  void set_decay(double weight_decay, const std::vector<bool>& decay);
  // What clone_for copies besides the constructor's arguments: the clipping bound.
  void copy_settings(const Optimizer& from) { max_norm_ = from.max_norm_; }
  void check(std::span<const Tensor> grads) const;
  // Updates elements [lo, hi) of parameter i as step number steps_ + 1. The gradient to use
  // is grad_scale() * grads[i] when clipping() (Note [Weight decay and clipping]).
  virtual void update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
                      std::int64_t hi) = 0;
  bool clipping() const { return max_norm_ > 0; }
  double grad_scale() const { return scale_; }

  std::vector<Tensor> params_;
  double lr_;
  std::int64_t steps_ = 0;

 private:
  double global_norm(std::span<const Tensor> grads);

  double weight_decay_ = 0;
  std::vector<char> decay_;  // one per parameter, or empty: all decay
  double max_norm_ = 0, last_norm_ = 0, scale_ = 1;
  std::vector<double> partial_;  // the norm's per-block sums of squares (sized once)
};

// Whether the usual recipe decays parameter i of `store`: weights (ParamStore::role kWeight) do;
// biases and normalisation scales and shifts do not. A parameter created without a role has one
// from its rank (nn/params.hpp): rank >= 2 a weight, below a bias.
bool decays_by_default(const ParamStore& store, std::size_t i);
// One flag per parameter of `store`, in its order, from `rule` (by default decays_by_default):
// the `decay` of an optimizer's options.
std::vector<bool> decay_mask(const ParamStore& store,
                             const std::function<bool(const ParamStore&, std::size_t)>& rule =
                                 decays_by_default);

struct SGDOptions {
  double weight_decay = 0;   // coupled L2: g += weight_decay * p
  std::vector<bool> decay = {};  // which parameters decay (empty: all); see decay_mask
};

// p -= lr * g   (torch.optim.SGD without momentum)
class SGD final : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, double lr, SGDOptions options = {});
  const char* name() const override { return "sgd"; }
  std::unique_ptr<Optimizer> clone_for(std::vector<Tensor> params) const override;

 private:
  void update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
              std::int64_t hi) override;
  SGDOptions options_;
};

struct MomentumOptions {
  double momentum = 0.9;
  bool nesterov = false;     // p -= lr * (g + momentum * v), as torch.optim.SGD's nesterov
  double weight_decay = 0;   // coupled L2: g += weight_decay * p
  std::vector<bool> decay = {};  // which parameters decay (empty: all); see decay_mask
};

// v = momentum * v + g; p -= lr * v   (torch.optim.SGD with momentum, dampening 0)
class Momentum final : public Optimizer {
 public:
  Momentum(std::vector<Tensor> params, double lr, double momentum = 0.9);
  Momentum(std::vector<Tensor> params, double lr, MomentumOptions options);
  const char* name() const override { return "momentum"; }
  std::unique_ptr<Optimizer> clone_for(std::vector<Tensor> params) const override;
  std::vector<std::pair<std::string, Tensor>> state() const override;

 private:
  void update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
              std::int64_t hi) override;
  MomentumOptions options_;
  std::vector<Tensor> velocity_;
};

struct AdamOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0;   // coupled L2 (torch.optim.Adam's): g += weight_decay * p
  std::vector<bool> decay = {};  // which parameters decay (empty: all); see decay_mask
};

// Kingma & Ba 2015, with bias correction (torch.optim.Adam, amsgrad off).
class Adam final : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, double lr, double beta1 = 0.9, double beta2 = 0.999,
       double eps = 1e-8);
  Adam(std::vector<Tensor> params, double lr, AdamOptions options);
  const char* name() const override { return "adam"; }
  std::unique_ptr<Optimizer> clone_for(std::vector<Tensor> params) const override;
  std::vector<std::pair<std::string, Tensor>> state() const override;

 private:
  void update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
              std::int64_t hi) override;
  AdamOptions options_;
  std::vector<Tensor> m_, v_;
};

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.01;  // decoupled: p -= lr * weight_decay * p (torch.optim.AdamW's)
  std::vector<bool> decay = {};  // which parameters decay (empty: all); see decay_mask
};

// Loshchilov & Hutter 2019: Adam with decoupled weight decay (torch.optim.AdamW, amsgrad off):
// p *= 1 - lr * weight_decay, then Adam's step on the (undecayed) gradient.
class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, double lr, AdamWOptions options = {});
  const char* name() const override { return "adamw"; }
  std::unique_ptr<Optimizer> clone_for(std::vector<Tensor> params) const override;
  std::vector<std::pair<std::string, Tensor>> state() const override;

 private:
  void update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
              std::int64_t hi) override;
  AdamWOptions options_;
  std::vector<Tensor> m_, v_;
};

// The optimizers make_optimizer builds, by name: "sgd", "momentum", "adam", "adamw".
const std::vector<std::string>& optimizer_names();
// The names as a message lists the choices: "sgd, momentum, adam or adamw".
const std::string& optimizer_choices();
// Throws tbgrad::Error ("unknown optimizer 'rmsprop' (expected sgd, momentum, adam or adamw)") unless
// `name` is one of optimizer_names(). The one check of an optimizer's name: make_optimizer makes
// it, and so do programs that take a name from their user or a file before building one.
void check_optimizer_name(const std::string& name);

// One of optimizer_names(); throws tbgrad::Error (check_optimizer_name's) otherwise.
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<Tensor> params,
                                          double lr);

// What make_optimizer's second form sets besides the kind's defaults.
struct OptimizerConfig {
  // Unset: the kind's default (0; AdamW's 0.01).
  std::optional<double> weight_decay;
  std::vector<bool> decay = {};  // which parameters decay (empty: all); see decay_mask
  double max_grad_norm = 0;  // 0: no clipping
};
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<Tensor> params,
                                          double lr, const OptimizerConfig& config);

}  // namespace tbgrad::nn
