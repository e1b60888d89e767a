// The matmul kernel's interface to its op (ops/matmul.cpp): compiled once per SIMD target in
// ops/matmul_kernels.cpp and dispatched at run time (Note [Vector widths] in ops/simd.hpp).
#pragma once

#include <cstdint>

#include "ops/simd.hpp"

namespace tbgrad::detail {

// C [M, N] = op(A) op(B), op(A) [M, K], op(B) [K, N].
struct MatmulDims {
  std::int64_t m, k, n;
  bool transpose_a, transpose_b;
};

// Scratch elements the kernel needs, for any target (sized for the widest vector of T).
template <typename T>
std::int64_t matmul_workspace_elements(const MatmulDims& d) {
  constexpr std::int64_t L = kMaxLanes<T>;
  if (d.transpose_b && !d.transpose_a) return (d.k + d.n) * round_up(d.m, L);
  if (d.transpose_b && d.transpose_a) return d.k * round_up(d.n, L);
  return d.k * L;  // B's tail columns
}

void matmul_kernel(const MatmulDims& d, const float* a, const float* b, float* c, float* work);
void matmul_kernel(const MatmulDims& d, const double* a, const double* b, double* c, double* work);

}  // namespace tbgrad::detail
