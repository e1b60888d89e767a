#include "nn/optim.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "graph/parallel.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad::nn {
namespace {

// Elements per task: an update is a few flops per element, so below ~64K elements a second
// thread costs more (waking it, moving the tensor between caches) than it saves.
constexpr std::int64_t kUpdateGrain = 65536;

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
  for_each_block(params_,
                 [&](std::int64_t lo, std::int64_t hi, std::size_t i) { update(grads, i, lo, hi); });
  ++steps_;
}

SGD::SGD(std::vector<Tensor> params, double lr) : Optimizer(std::move(params), lr) {}

void SGD::update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo, std::int64_t hi) {
  detail::dispatch_float(params_[i].dtype(), [&]<typename T>() {
    T* p = params_[i].data<T>();
    const T* g = grads[i].data<T>();
    const T lr = static_cast<T>(lr_);
    for (std::int64_t j = lo; j < hi; ++j) p[j] -= lr * g[j];
  });
}

Momentum::Momentum(std::vector<Tensor> params, double lr, double momentum)
    : Optimizer(std::move(params), lr), momentum_(momentum), velocity_(zeros_like(params_)) {}

void Momentum::update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
                      std::int64_t hi) {
  detail::dispatch_float(params_[i].dtype(), [&]<typename T>() {
    T* p = params_[i].data<T>();
    T* v = velocity_[i].data<T>();
    const T* g = grads[i].data<T>();
    const T lr = static_cast<T>(lr_), mu = static_cast<T>(momentum_);
    for (std::int64_t j = lo; j < hi; ++j) {
      v[j] = mu * v[j] + g[j];
      p[j] -= lr * v[j];
    }
  });
}

std::vector<std::pair<std::string, Tensor>> Momentum::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (std::size_t i = 0; i < velocity_.size(); ++i) {
    s.emplace_back("velocity." + std::to_string(i), velocity_[i]);
  }
  return s;
}

Adam::Adam(std::vector<Tensor> params, double lr, double beta1, double beta2, double eps)
    : Optimizer(std::move(params), lr),
      beta1_(beta1),
      beta2_(beta2),
      eps_(eps),
      m_(zeros_like(params_)),
      v_(zeros_like(params_)) {}

void Adam::update(std::span<const Tensor> grads, std::size_t i, std::int64_t lo,
                  std::int64_t hi) {
  const double t = static_cast<double>(steps_ + 1);
  const double c1 = 1.0 - std::pow(beta1_, t);
  const double c2 = 1.0 - std::pow(beta2_, t);
  detail::dispatch_float(params_[i].dtype(), [&]<typename T>() {
    T* p = params_[i].data<T>();
    T* m = m_[i].data<T>();
    T* v = v_[i].data<T>();
    const T* g = grads[i].data<T>();
    const T b1 = static_cast<T>(beta1_), b2 = static_cast<T>(beta2_);
    const T step = static_cast<T>(lr_ / c1), inv_c2 = static_cast<T>(1.0 / c2);
    const T eps = static_cast<T>(eps_);
    for (std::int64_t j = lo; j < hi; ++j) {
      m[j] = b1 * m[j] + (T(1) - b1) * g[j];
      v[j] = b2 * v[j] + (T(1) - b2) * g[j] * g[j];
      p[j] -= step * m[j] / (std::sqrt(v[j] * inv_c2) + eps);
    }
  });
}

std::vector<std::pair<std::string, Tensor>> Adam::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (std::size_t i = 0; i < m_.size(); ++i) s.emplace_back("adam_m." + std::to_string(i), m_[i]);
  for (std::size_t i = 0; i < v_.size(); ++i) s.emplace_back("adam_v." + std::to_string(i), v_[i]);
  return s;
}

std::unique_ptr<Optimizer> SGD::clone_for(std::vector<Tensor> params) const {
  return std::make_unique<SGD>(std::move(params), lr_);
}
std::unique_ptr<Optimizer> Momentum::clone_for(std::vector<Tensor> params) const {
  return std::make_unique<Momentum>(std::move(params), lr_, momentum_);
}
std::unique_ptr<Optimizer> Adam::clone_for(std::vector<Tensor> params) const {
  return std::make_unique<Adam>(std::move(params), lr_, beta1_, beta2_, eps_);
}

const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names = {"sgd", "momentum", "adam"};
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
  throw Error("make_optimizer: optimizer_names() lists '" + kind + "', which it cannot build");
}

}  // namespace tbgrad::nn
