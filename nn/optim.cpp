#include "nn/optim.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "graph/parallel.hpp"
#include "nn/params.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad::nn {
namespace {

// Elements per task: an update is a few flops per element, so below ~64K elements a second
// thread costs more (waking it, moving the tensor between caches) than it saves.
constexpr std::int64_t kUpdateGrain = 65536;
// The global norm's blocks: fixed by the gradient's size only (Note [Determinism]).
constexpr std::int64_t kNormBlock = 65536;

std::int64_t norm_blocks(std::int64_t n) {
  return (n + kNormBlock - 1) / kNormBlock;
}

std::vector<Tensor> zeros_like(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.emplace_back(t.shape(), t.dtype());
  return out;
}

// Note [Denormals]: the optimizers' updates run with subnormal numbers flushed to zero (x86:
// MXCSR's FTZ and DAZ bits; AArch64: FPCR.FZ), set for the block's thread and restored after
// it. A weight whose gradient is zero for many steps (a ReLU unit that never fires) decays its
// Adam moment m by 0.9 a step into the subnormal range, and on x86 every arithmetic operation
// with a subnormal input or result takes a microcode assist of a hundred cycles or more:
// measured on the Xeon VM, Adam's update grew to 36% of a one-thread seed epoch, and the
// epochs of `bash scripts/train.sh` slowed from 0.67 s to 0.89 s over four epochs. Values
// under 1.2e-38 (f32) become 0 instead; a training run's result changes in digits that no
// test or figure reads, and results stay independent of the thread count (every element's
// arithmetic is the same wherever it runs). TensorFlow flushes subnormals in its CPU threads
// the same way; the kernels here do not need it (their operands are activations and
// gradients of normal size; SGD epochs hold their speed).
class FlushDenormals {
 public:
  FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | kFtz | kDaz);
#elif defined(__aarch64__)
    std::uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    saved_ = fpcr;
    __asm__ volatile("msr fpcr, %0" ::"r"(fpcr | kFz));
#endif
  }
  ~FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(static_cast<unsigned>(saved_));
#elif defined(__aarch64__)
    __asm__ volatile("msr fpcr, %0" ::"r"(saved_));
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  [[maybe_unused]] static constexpr unsigned kFtz = 0x8000, kDaz = 0x0040;
  [[maybe_unused]] static constexpr std::uint64_t kFz = std::uint64_t{1} << 24;
  [[maybe_unused]] std::uint64_t saved_ = 0;
};

// Calls fn(lo, hi, i) for blocks of parameter i's elements, in the executor's thread arena,
// with subnormals flushed (Note [Denormals]).
template <typename Fn>
void for_each_block(const std::vector<Tensor>& params, const Fn& fn) {
  auto body = [&] {
    for (std::size_t i = 0; i < params.size(); ++i) {
      parallel_for(params[i].numel(), kUpdateGrain, [&](std::int64_t lo, std::int64_t hi) {
        const FlushDenormals flush;
        fn(lo, hi, i);
      });
    }
  };
  run_in_arena(body);
}

}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params, double lr) : params_(std::move(params)), lr_(lr) {
  if (!std::isfinite(lr) || lr <= 0)
    throw Error("optimizer: learning rate must be positive and finite");
  std::int64_t blocks = 0;
  for (const Tensor& p : params_) blocks += norm_blocks(p.numel());
  partial_.assign(static_cast<std::size_t>(blocks), 0.0);
}

void Optimizer::set_decay(double weight_decay, const std::vector<bool>& decay) {
  if (!std::isfinite(weight_decay) || weight_decay < 0) {
    throw Error(std::string(name()) + ": weight decay must be finite and >= 0, got " +
                std::to_string(weight_decay));
  }
  if (!decay.empty() && decay.size() != params_.size()) {
    throw Error(std::string(name()) + ": " + std::to_string(decay.size()) +
                " weight-decay flags for " + std::to_string(params_.size()) + " parameters");
  }
  weight_decay_ = weight_decay;
  decay_.assign(decay.begin(), decay.end());
}

void Optimizer::set_max_grad_norm(double max_norm) {
  if (!std::isfinite(max_norm) || max_norm < 0) {
    throw Error("optimizer: max_grad_norm must be finite and >= 0 (0: no clipping), got " +
                std::to_string(max_norm));
  }
  max_norm_ = max_norm;
}

double Optimizer::global_norm(std::span<const Tensor> grads) {
  // Block b of every gradient in its own slot, in parallel; the slots added in order.
  std::size_t first = 0;
  run_in_arena([&] {
    for (std::size_t i = 0; i < grads.size(); ++i) {
      const std::int64_t n = grads[i].numel();
      double* slots = partial_.data() + first;
      parallel_for(norm_blocks(n), 1, [&](std::int64_t lo, std::int64_t hi) {
        detail::dispatch_float(grads[i].dtype(), [&]<typename T>() {
          const T* g = grads[i].data<T>();
          for (std::int64_t b = lo; b < hi; ++b) {
            double s = 0;
            const std::int64_t end = std::min(n, (b + 1) * kNormBlock);
            for (std::int64_t j = b * kNormBlock; j < end; ++j) {
              const auto x = static_cast<double>(g[j]);
              s += x * x;
            }
            slots[b] = s;
          }
        });
      });
      first += static_cast<std::size_t>(norm_blocks(n));
    }
  });
  double sum = 0;
  for (double s : partial_) sum += s;
  return std::sqrt(sum);
}

void Optimizer::check(std::span<const Tensor> grads) const {
  if (grads.size() != params_.size()) {
    throw Error(std::string(name()) + ": got " + std::to_string(grads.size()) + " gradients for " +
                std::to_string(params_.size()) + " parameters");
  }
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!(grads[i].shape() == params_[i].shape()) || grads[i].dtype() != params_[i].dtype()) {
      throw Error(std::string(name()) + ": gradient " + std::to_string(i) + " " +
                  grads[i].shape().str() + " does not match parameter " + params_[i].shape().str());
    }
  }
}

void Optimizer::step(std::span<const Tensor> grads) {
  check(grads);
  if (clipping()) {
    // torch.nn.utils.clip_grad_norm_: clip_coef = max_norm / (norm + 1e-6), clamped to 1
    // (a NaN norm gives a NaN scale: std::min keeps its first argument).
    last_norm_ = global_norm(grads);
    scale_ = std::min(max_norm_ / (last_norm_ + 1e-6), 1.0);
  }
  for_each_block(params_,
                 [&](std::int64_t lo, std::int64_t hi, std::size_t i) { update(grads, i, lo, hi); });
  ++steps_;
}

namespace {

// The gradient an update uses for element j: clipped (scaled) when clipping is on, plus the
// coupled weight decay wd * p when parameter i decays. The two choices are template arguments,
// so that the loops without them are the plain ones (and the same bits as before them).
template <typename T, bool kClip, bool kDecay>
struct GradOf {
  const T* g;
  const T* p;
  T scale, wd;
  T operator[](std::int64_t j) const {
    T gj = g[j];
    if constexpr (kClip) gj = scale * gj;
    if constexpr (kDecay) gj = gj + wd * p[j];
    return gj;
  }
};

// fn(grad) with the GradOf of parameter p's gradient g.
template <typename T, typename Fn>
void with_grad(const Tensor& g, const Tensor& p, bool clip, double scale, double wd,
               const Fn& fn) {
  const T* gd = g.data<T>();
  const T* pd = p.data<T>();
  const auto s = static_cast<T>(scale), w = static_cast<T>(wd);
  if (clip && wd != 0) {
    fn(GradOf<T, true, true>{gd, pd, s, w});
  } else if (clip) {
    fn(GradOf<T, true, false>{gd, pd, s, w});
  } else if (wd != 0) {
    fn(GradOf<T, false, true>{gd, pd, s, w});
  } else {
    fn(GradOf<T, false, false>{gd, pd, s, w});
  }
}

}  // namespace

SGD::SGD(std::vector<Tensor> params, double lr, SGDOptions options)
    : Optimizer(std::move(params), lr), options_(std::move(options)) {
  set_decay(options_.weight_decay, options_.decay);
}

void SGD::update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo, std::int64_t hi) {
  const double wd = decays(i) ? weight_decay() : 0.0;
  detail::dispatch_float(params_[i].dtype(), [&]<typename T>() {
    T* p = params_[i].data<T>();
    const T lr = static_cast<T>(lr_);
    with_grad<T>(grads[i], params_[i], clipping(), grad_scale(), wd, [&](const auto& g) {
      for (std::int64_t j = lo; j < hi; ++j) p[j] -= lr * g[j];
    });
  });
}

Momentum::Momentum(std::vector<Tensor> params, double lr, double momentum)
    : Momentum(std::move(params), lr, MomentumOptions{.momentum = momentum}) {}

Momentum::Momentum(std::vector<Tensor> params, double lr, MomentumOptions options)
    : Optimizer(std::move(params), lr),
      options_(std::move(options)),
      velocity_(zeros_like(params_)) {
  set_decay(options_.weight_decay, options_.decay);
}

void Momentum::update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
                      std::int64_t hi) {
  const double wd = decays(i) ? weight_decay() : 0.0;
  detail::dispatch_float(params_[i].dtype(), [&]<typename T>() {
    T* p = params_[i].data<T>();
    T* v = velocity_[i].data<T>();
    const T lr = static_cast<T>(lr_), mu = static_cast<T>(options_.momentum);
    with_grad<T>(grads[i], params_[i], clipping(), grad_scale(), wd, [&](const auto& g) {
      if (options_.nesterov) {
        for (std::int64_t j = lo; j < hi; ++j) {
          const T gj = g[j];
          v[j] = mu * v[j] + gj;
          p[j] -= lr * (gj + mu * v[j]);
        }
      } else {
        for (std::int64_t j = lo; j < hi; ++j) {
          v[j] = mu * v[j] + g[j];
          p[j] -= lr * v[j];
        }
      }
    });
  });
}

std::vector<std::pair<std::string, Tensor>> Momentum::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (std::size_t i = 0; i < velocity_.size(); ++i) {
    s.emplace_back("velocity." + std::to_string(i), velocity_[i]);
  }
  return s;
}

namespace {

// Adam's moments and step for elements [lo, hi) of one parameter, as step t (1-based).
template <typename T, typename Grad>
void adam_block(T* p, T* m, T* v, const Grad& g, double lr, double beta1, double beta2,
                double eps, std::int64_t t, std::int64_t lo, std::int64_t hi) {
  const auto td = static_cast<double>(t);
  const double c1 = 1.0 - std::pow(beta1, td);
  const double c2 = 1.0 - std::pow(beta2, td);
  const T b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2);
  const T step = static_cast<T>(lr / c1), inv_c2 = static_cast<T>(1.0 / c2);
  const T e = static_cast<T>(eps);
  for (std::int64_t j = lo; j < hi; ++j) {
    const T gj = g[j];
    m[j] = b1 * m[j] + (T(1) - b1) * gj;
    v[j] = b2 * v[j] + (T(1) - b2) * gj * gj;
    p[j] -= step * m[j] / (std::sqrt(v[j] * inv_c2) + e);
  }
}

}  // namespace

Adam::Adam(std::vector<Tensor> params, double lr, double beta1, double beta2, double eps)
    : Adam(std::move(params), lr, AdamOptions{.beta1 = beta1, .beta2 = beta2, .eps = eps}) {}

Adam::Adam(std::vector<Tensor> params, double lr, AdamOptions options)
    : Optimizer(std::move(params), lr),
      options_(std::move(options)),
      m_(zeros_like(params_)),
      v_(zeros_like(params_)) {
  set_decay(options_.weight_decay, options_.decay);
}

void Adam::update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
                  std::int64_t hi) {
  const double wd = decays(i) ? weight_decay() : 0.0;
  detail::dispatch_float(params_[i].dtype(), [&]<typename T>() {
    with_grad<T>(grads[i], params_[i], clipping(), grad_scale(), wd, [&](const auto& g) {
      adam_block(params_[i].data<T>(), m_[i].data<T>(), v_[i].data<T>(), g, lr_,
                 options_.beta1, options_.beta2, options_.eps, steps_ + 1, lo, hi);
    });
  });
}

std::vector<std::pair<std::string, Tensor>> Adam::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (std::size_t i = 0; i < m_.size(); ++i) s.emplace_back("adam_m." + std::to_string(i), m_[i]);
  for (std::size_t i = 0; i < v_.size(); ++i) s.emplace_back("adam_v." + std::to_string(i), v_[i]);
  return s;
}

AdamW::AdamW(std::vector<Tensor> params, double lr, AdamWOptions options)
    : Optimizer(std::move(params), lr),
      options_(std::move(options)),
      m_(zeros_like(params_)),
      v_(zeros_like(params_)) {
  set_decay(options_.weight_decay, options_.decay);
}

void AdamW::update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
                   std::int64_t hi) {
  const double wd = decays(i) ? weight_decay() : 0.0;
  detail::dispatch_float(params_[i].dtype(), [&]<typename T>() {
    T* p = params_[i].data<T>();
    if (wd != 0) {
      // torch.optim.AdamW: param.mul_(1 - lr * weight_decay), before the moments.
      const T shrink = static_cast<T>(1.0 - lr_ * wd);
      for (std::int64_t j = lo; j < hi; ++j) p[j] *= shrink;
    }
    with_grad<T>(grads[i], params_[i], clipping(), grad_scale(), 0.0, [&](const auto& g) {
      adam_block(p, m_[i].data<T>(), v_[i].data<T>(), g, lr_, options_.beta1, options_.beta2,
                 options_.eps, steps_ + 1, lo, hi);
    });
  });
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (std::size_t i = 0; i < m_.size(); ++i) s.emplace_back("adamw_m." + std::to_string(i), m_[i]);
  for (std::size_t i = 0; i < v_.size(); ++i) s.emplace_back("adamw_v." + std::to_string(i), v_[i]);
  return s;
}

std::unique_ptr<Optimizer> SGD::clone_for(std::vector<Tensor> params) const {
  auto o = std::make_unique<SGD>(std::move(params), lr_, options_);
  o->copy_settings(*this);
  return o;
}
std::unique_ptr<Optimizer> Momentum::clone_for(std::vector<Tensor> params) const {
  auto o = std::make_unique<Momentum>(std::move(params), lr_, options_);
  o->copy_settings(*this);
  return o;
}
std::unique_ptr<Optimizer> Adam::clone_for(std::vector<Tensor> params) const {
  auto o = std::make_unique<Adam>(std::move(params), lr_, options_);
  o->copy_settings(*this);
  return o;
}
std::unique_ptr<Optimizer> AdamW::clone_for(std::vector<Tensor> params) const {
  auto o = std::make_unique<AdamW>(std::move(params), lr_, options_);
  o->copy_settings(*this);
  return o;
}

bool decays_by_default(const ParamStore& store, std::size_t i) {
  return store.roles()[i] == Role::kWeight;
}

std::vector<bool> decay_mask(const ParamStore& store,
                             const std::function<bool(const ParamStore&, std::size_t)>& rule) {
  std::vector<bool> mask(store.tensors().size());
  for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = rule(store, i);
  return mask;
}

const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names = {"sgd", "momentum", "adam", "adamw"};
  return names;
}

const std::string& optimizer_choices() {
  static const std::string choices = [] {
    const std::vector<std::string>& names = optimizer_names();
    std::string s = names.front();
    for (std::size_t i = 1; i < names.size(); ++i) {
      s += (i + 1 < names.size() ? ", " : " or ") + names[i];
    }
    return s;
  }();
  return choices;
}

void check_optimizer_name(const std::string& name) {
  const std::vector<std::string>& names = optimizer_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    throw Error("unknown optimizer '" + name + "' (expected " + optimizer_choices() + ")");
  }
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<Tensor> params,
                                          double lr) {
  check_optimizer_name(kind);
  if (kind == "sgd") return std::make_unique<SGD>(std::move(params), lr);
  if (kind == "momentum") return std::make_unique<Momentum>(std::move(params), lr);
  if (kind == "adam") return std::make_unique<Adam>(std::move(params), lr);
  if (kind == "adamw") return std::make_unique<AdamW>(std::move(params), lr);
  throw Error("make_optimizer: optimizer_names() lists '" + kind + "', which it cannot build");
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<Tensor> params,
                                          double lr, const OptimizerConfig& config) {
  check_optimizer_name(kind);
  std::unique_ptr<Optimizer> o;
  if (kind == "sgd") {
    o = std::make_unique<SGD>(std::move(params), lr,
                              SGDOptions{.weight_decay = config.weight_decay.value_or(0.0),
                                         .decay = config.decay});
  } else if (kind == "momentum") {
    o = std::make_unique<Momentum>(
        std::move(params), lr,
        MomentumOptions{.weight_decay = config.weight_decay.value_or(0.0), .decay = config.decay});
  } else if (kind == "adam") {
    o = std::make_unique<Adam>(
        std::move(params), lr,
        AdamOptions{.weight_decay = config.weight_decay.value_or(0.0), .decay = config.decay});
  } else if (kind == "adamw") {
    AdamWOptions a;
    if (config.weight_decay) a.weight_decay = *config.weight_decay;
    a.decay = config.decay;
    o = std::make_unique<AdamW>(std::move(params), lr, std::move(a));
  } else {
    throw Error("make_optimizer: optimizer_names() lists '" + kind + "', which it cannot build");
  }
  o->set_max_grad_norm(config.max_grad_norm);
  return o;
}

}  // namespace tbgrad::nn
