// batch_norm's row kernels, compiled once per SIMD target (this file re-includes itself through
// Highway's foreach_target.h; Note [Kernel export] in ops/simd_export.hpp).
//
// Note [Batch norm kernels]: every kernel here gives the same bits on every target, so a model
// with batch_norm trains to the same bits whatever the CPU:
// - A row's sums (of x, x^2, gy, gy*x) are in double, in kSums = 8 fixed running sums, element
//   i into sum i % 8 (tail elements, past the last whole 8, into sums 0, 1, ... in order), then
//   added pairwise ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)). The 8 sums are the lanes
//   of 8 / L vectors of L doubles (one AVX-512 vector, two AVX2 ones, four SSE4 ones, eight
//   scalars): element i + j goes to lane j, a float promoted to double exactly. A single running
//   sum would be a chain of dependent adds (one element per add's latency, four cycles).
// - The elementwise kernels compute y = x * a + b and dx = k * ((gy - mg) - (x - mu) * slope) in
//   T, one rounding per operation, in that order, in the vector loop and its scalar tail alike.
// - No fused multiply-add anywhere: this file is compiled with -ffp-contract=off
//   (CMakeLists.txt), because GCC's default for GNU C++ contracts a multiply and an add, even
//   Highway's separate Mul and Add, into an FMA on the targets that have one (AVX2, AVX-512) and
//   not on the others, which would round differently per target.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/batch_norm_kernels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <type_traits>

#include "graph/parallel.hpp"
#include "ops/batch_norm_kernels.hpp"
#include "ops/simd-inl.hpp"
#include "ops/simd_export.hpp"

HWY_BEFORE_NAMESPACE();
namespace tbgrad::HWY_NAMESPACE {
namespace {

using detail::BnRows;

constexpr int kSums = 8;
using DD = Tag<double>;
constexpr int kLanesD = static_cast<int>(hn::MaxLanes(DD()));
static_assert(kLanesD <= kSums && kSums % kLanesD == 0, "the 8 sums are whole vectors");
constexpr int kVecs = kSums / kLanesD;  // vectors per 8 sums

inline double add_sums(const double* s) {
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// kLanesD elements from p, as doubles.
template <typename T>
HWY_INLINE VecT<double> load_double(const T* HWY_RESTRICT p) {
  const DD d;
  if constexpr (std::is_same_v<T, double>) {
    return hn::LoadU(d, p);
  } else {
    const hn::Rebind<float, DD> df;
    return hn::PromoteTo(d, hn::LoadU(df, p));
  }
}

// out[0] = the sum of x[i], out[1] = of x[i]^2, over i in [0, n); with gy (kGrad), also out[2]
// = the sum of gy[i] and out[3] = of gy[i] * x[i]; without, out[2] = out[3] = 0.
template <bool kGrad, typename T>
void row_moments(std::int64_t n, const T* HWY_RESTRICT x, const T* HWY_RESTRICT gy,
                 double* HWY_RESTRICT out) {
  const DD d;
  using V = VecT<double>;
  V sx[kVecs], sxx[kVecs], sg[kVecs], sgx[kVecs];
  for (int k = 0; k < kVecs; ++k) sx[k] = sxx[k] = sg[k] = sgx[k] = hn::Zero(d);
  std::int64_t i = 0;
  for (; i + kSums <= n; i += kSums) {
    for (int k = 0; k < kVecs; ++k) {
      const V v = load_double(x + i + k * kLanesD);
      sx[k] = hn::Add(sx[k], v);
      sxx[k] = hn::Add(sxx[k], hn::Mul(v, v));
      if constexpr (kGrad) {
        const V gv = load_double(gy + i + k * kLanesD);
        sg[k] = hn::Add(sg[k], gv);
        sgx[k] = hn::Add(sgx[k], hn::Mul(gv, v));
      }
    }
  }
  HWY_ALIGN double s[4][kSums];
  for (int k = 0; k < kVecs; ++k) {
    hn::Store(sx[k], d, s[0] + k * kLanesD);
    hn::Store(sxx[k], d, s[1] + k * kLanesD);
    hn::Store(sg[k], d, s[2] + k * kLanesD);
    hn::Store(sgx[k], d, s[3] + k * kLanesD);
  }
  for (int j = 0; i < n; ++i, ++j) {
    const auto v = static_cast<double>(x[i]);
    s[0][j] += v;
    s[1][j] += v * v;
    if constexpr (kGrad) {
      const auto gv = static_cast<double>(gy[i]);
      s[2][j] += gv;
      s[3][j] += gv * v;
    }
  }
  for (int q = 0; q < 4; ++q) out[q] = add_sums(s[q]);
}

// The sum of x[i] over i in [0, n), in the same order.
template <typename T>
double row_sum(std::int64_t n, const T* HWY_RESTRICT x) {
  const DD d;
  using V = VecT<double>;
  V sx[kVecs];
  for (int k = 0; k < kVecs; ++k) sx[k] = hn::Zero(d);
  std::int64_t i = 0;
  for (; i + kSums <= n; i += kSums) {
    for (int k = 0; k < kVecs; ++k) sx[k] = hn::Add(sx[k], load_double(x + i + k * kLanesD));
  }
  HWY_ALIGN double s[kSums];
  for (int k = 0; k < kVecs; ++k) hn::Store(sx[k], d, s + k * kLanesD);
  for (int j = 0; i < n; ++i, ++j) s[j] += static_cast<double>(x[i]);
  return add_sums(s);
}

template <typename T>
void batch_norm_row_moments(const BnRows& g, const T* x, const T* gy, double* p) {
  parallel_for(g.rows, g.grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t r = lo; r < hi; ++r) {
      if (gy != nullptr) {
        row_moments<true>(g.s, x + r * g.s, gy + r * g.s, p + 4 * r);
      } else {
        row_moments<false>(g.s, x + r * g.s, static_cast<const T*>(nullptr), p + 4 * r);
      }
    }
  });
}

template <typename T>
void batch_norm_row_sum(const BnRows& g, const T* gy, double* p) {
  parallel_for(g.rows, g.grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t r = lo; r < hi; ++r) p[r] = row_sum(g.s, gy + r * g.s);
  });
}

template <typename T>
void batch_norm_scale_shift(const BnRows& g, const T* x, const double* ta, const double* tb,
                            T* y) {
  parallel_for(g.rows, g.grain, [&](std::int64_t lo, std::int64_t hi) {
    const Tag<T> d;
    const std::int64_t L = lanes<T>();
    for (std::int64_t r = lo; r < hi; ++r) {
      const T a = static_cast<T>(ta[r % g.c]), b = static_cast<T>(tb[r % g.c]);
      const auto va = hn::Set(d, a), vb = hn::Set(d, b);
      const T* HWY_RESTRICT xr = x + r * g.s;
      T* HWY_RESTRICT yr = y + r * g.s;
      std::int64_t i = 0;
      for (; i + L <= g.s; i += L) hn::StoreU(hn::Add(hn::Mul(hn::LoadU(d, xr + i), va), vb), d, yr + i);
      for (; i < g.s; ++i) yr[i] = xr[i] * a + b;
    }
  });
}

template <typename T>
void batch_norm_input_grad(const BnRows& g, const T* x, const T* gy, const double* tk,
                           const double* tmg, const double* tslope, const double* tmu, T* dx) {
  parallel_for(g.rows, g.grain, [&](std::int64_t lo, std::int64_t hi) {
    const Tag<T> d;
    const std::int64_t L = lanes<T>();
    for (std::int64_t r = lo; r < hi; ++r) {
      const std::int64_t c = r % g.c;
      const T k = static_cast<T>(tk[c]), mg = static_cast<T>(tmg[c]);
      const T slope = static_cast<T>(tslope[c]), mu = static_cast<T>(tmu[c]);
      const auto vk = hn::Set(d, k), vmg = hn::Set(d, mg);
      const auto vslope = hn::Set(d, slope), vmu = hn::Set(d, mu);
      const T* HWY_RESTRICT xr = x + r * g.s;
      const T* HWY_RESTRICT gr = gy + r * g.s;
      T* HWY_RESTRICT out = dx + r * g.s;
      std::int64_t i = 0;
      for (; i + L <= g.s; i += L) {
        const auto u = hn::Sub(hn::LoadU(d, gr + i), vmg);
        const auto t = hn::Mul(hn::Sub(hn::LoadU(d, xr + i), vmu), vslope);
        hn::StoreU(hn::Mul(vk, hn::Sub(u, t)), d, out + i);
      }
      for (; i < g.s; ++i) out[i] = k * (gr[i] - mg - (xr[i] - mu) * slope);
    }
  });
}

}  // namespace

// Note [Kernel export] (ops/simd_export.hpp).
// NOLINTBEGIN(bugprone-macro-parentheses): T is a type.
#define TBGRAD_BN_KERNELS(X, T, S)                                                             \
  X(BnRowMoments##S, batch_norm_row_moments_kernel, batch_norm_row_moments,                    \
    (const BnRows& g, const T* x, const T* gy, double* p), (g, x, gy, p))                      \
  X(BnRowSum##S, batch_norm_row_sum_kernel, batch_norm_row_sum,                                \
    (const BnRows& g, const T* gy, double* p), (g, gy, p))                                     \
  X(BnScaleShift##S, batch_norm_scale_shift_kernel, batch_norm_scale_shift,                    \
    (const BnRows& g, const T* x, const double* a, const double* b, T* y), (g, x, a, b, y))    \
  X(BnInputGrad##S, batch_norm_input_grad_kernel, batch_norm_input_grad,                       \
    (const BnRows& g, const T* x, const T* gy, const double* k, const double* mg,              \
     const double* slope, const double* mu, T* dx),                                            \
    (g, x, gy, k, mg, slope, mu, dx))
// NOLINTEND(bugprone-macro-parentheses)
TBGRAD_KERNEL_ENTRIES(TBGRAD_BN_KERNELS)

}  // namespace tbgrad::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace tbgrad {
TBGRAD_KERNEL_EXPORTS(TBGRAD_BN_KERNELS)
}  // namespace tbgrad
#endif  // HWY_ONCE
