// Direct convolution kernels for the geometries the register-blocked kernels
// (ops/conv2d_kernels.hpp) do not take: groups > 1 (depthwise included) and dilation > 1.
//
// Each output element is one task's chain of multiply-adds in a fixed order (Note
// [Determinism] in graph/parallel.hpp), so results are the same for any thread count; the inner
// loops run over contiguous output columns (for stride 1) so that the compiler vectorises them.
// They need no workspace, and also serve geometries whose output is cropped (oh, ow below the
// window's count): nothing reads past g.oh rows or g.ow columns.
#pragma once

#include "ops/conv2d_kernels.hpp"

namespace tbgrad::detail {

// y = conv(x, k) + b (b may be null): x [N, IC, H, W], k [OC, IC/G, KH, KW], y [N, OC, OH, OW].
void conv2d_general_forward(const ConvGeometry& g, const float* x, const float* k, const float* b,
                            float* y);
void conv2d_general_forward(const ConvGeometry& g, const double* x, const double* k,
                            const double* b, double* y);

// gx [N, IC, H, W] from gy [N, OC, OH, OW] and k.
void conv2d_general_input_grad(const ConvGeometry& g, const float* gy, const float* k, float* gx);
void conv2d_general_input_grad(const ConvGeometry& g, const double* gy, const double* k,
                               double* gx);

// gk [OC, IC/G, KH, KW] from x and gy: for each weight, the sum over images, rows and columns
// in that order (the columns in a fixed number of interleaved partial sums).
void conv2d_general_weight_grad(const ConvGeometry& g, const float* x, const float* gy,
                                float* gk);
void conv2d_general_weight_grad(const ConvGeometry& g, const double* x, const double* gy,
                                double* gk);

}  // namespace tbgrad::detail
