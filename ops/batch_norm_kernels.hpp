// batch_norm's row kernels, their interface to the ops (ops/batch_norm.cpp): compiled once per
// SIMD target in ops/batch_norm_kernels.cpp and dispatched at run time. Each gives the same
// bits on every target and for any thread count (Note [Batch norm kernels] there).
#pragma once

#include <cstdint>

namespace tbgrad::detail {

// x [N, C, *] as rows = N * C rows of s contiguous elements; row r is channel r % c. grain:
// rows per parallel task.
struct BnRows {
  std::int64_t rows, c, s, grain;
};

// p[4r + 0] = the sum of row r's x, p[4r + 1] = of x^2 and, with gy (else nullptr, and zeros),
// p[4r + 2] = of gy, p[4r + 3] = of gy * x; in double, in the fixed order of the Note.
void batch_norm_row_moments_kernel(const BnRows& g, const float* x, const float* gy, double* p);
void batch_norm_row_moments_kernel(const BnRows& g, const double* x, const double* gy, double* p);
// p[r] = the sum of row r of gy, in double, in the same order.
void batch_norm_row_sum_kernel(const BnRows& g, const float* gy, double* p);
void batch_norm_row_sum_kernel(const BnRows& g, const double* gy, double* p);
// y = x * a + b over row r with a = T(a[c]), b = T(b[c]), c = r % g.c.
void batch_norm_scale_shift_kernel(const BnRows& g, const float* x, const double* a,
                                   const double* b, float* y);
void batch_norm_scale_shift_kernel(const BnRows& g, const double* x, const double* a,
                                   const double* b, double* y);
// dx = k * (gy - mg - (x - mu) * slope) over row r, each factor T(its table[r % g.c]).
void batch_norm_input_grad_kernel(const BnRows& g, const float* x, const float* gy,
                                  const double* k, const double* mg, const double* slope,
                                  const double* mu, float* dx);
void batch_norm_input_grad_kernel(const BnRows& g, const double* x, const double* gy,
                                  const double* k, const double* mg, const double* slope,
                                  const double* mu, double* dx);

}  // namespace tbgrad::detail
