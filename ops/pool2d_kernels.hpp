// The average-pooling kernels' interface to their ops (ops/pool2d.cpp): compiled once per
// SIMD target in ops/pool2d_kernels.cpp and dispatched at run time.
#pragma once

#include <algorithm>
#include <cstdint>

#include "ops/simd.hpp"
#include "ops/window.hpp"

namespace tbgrad::detail {

struct PoolGeometry {
  std::int64_t planes, h, w, oh, ow;  // planes = N*C
  Window2d win;
};

// Planes per task: pooling planes are small, so batch several into one task.
inline std::int64_t plane_grain(const PoolGeometry& g) {
  return std::max<std::int64_t>(1, 8192 / std::max<std::int64_t>(1, g.oh * g.ow * g.win.kh * g.win.kw));
}

// A plane with its padding, as one flat array.
struct FlatPlane {
  std::int64_t h, w;  // the plane with its padding
  bool padded;
  std::int64_t size() const { return h * w; }
};

inline FlatPlane flat_plane(const PoolGeometry& g) {
  const bool padded = g.win.ph != 0 || g.win.pw != 0;
  return {g.h + 2 * std::int64_t{g.win.ph}, g.w + 2 * std::int64_t{g.win.pw}, padded};
}

// Elements of workspace per plane: v and h (forward), or gh and gv with the zeros around them
// (backward), over the output rows; and the padded copy of the plane (or of its gradient) if
// there is padding. The backward pass needs the more; a block of planes at stride 1 needs kh-1
// rows more than one plane does, once (ops/pool2d_kernels.cpp).
inline std::int64_t avg_pool_work(const PoolGeometry& g) {
  const FlatPlane f = flat_plane(g);
  return 2 * g.oh * f.w + 3 * static_cast<std::int64_t>(g.win.kh - 1) * f.w + g.win.kw - 1 +
         (f.padded ? f.size() : 0);
}

// y [planes, OH, OW] = average pooling of x [planes, H, W]; `work`: planes * avg_pool_work(g).
void avg_pool_kernel(const PoolGeometry& g, const float* x, float* y, float* work);
void avg_pool_kernel(const PoolGeometry& g, const double* x, double* y, double* work);
// gx [planes, H, W] from gy [planes, OH, OW], then `ep` (Note [Epilogues] in graph/op.hpp),
// block of planes by block.
void avg_pool_backward_kernel(const PoolGeometry& g, const float* gy, float* gx, float* work,
                              const OutputEpilogue<float>& ep = {});
void avg_pool_backward_kernel(const PoolGeometry& g, const double* gy, double* gx, double* work,
                              const OutputEpilogue<double>& ep = {});

}  // namespace tbgrad::detail
