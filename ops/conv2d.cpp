#include "ops/conv2d.hpp"

#include <algorithm>
#include <memory>
#include <optional>

#include "graph/checked.hpp"
#include "graph/parallel.hpp"
#include "ops/conv2d_general.hpp"
#include "ops/conv2d_kernels.hpp"
#include "ops/conv2d_phase.hpp"
#include "ops/kernel_util.hpp"
#include "ops/reduce.hpp"
#include "ops/shape.hpp"

namespace tbgrad {
namespace {

using detail::ConvGeometry;
using detail::dispatch_float;
using detail::PhaseGeometry;
using detail::Window2d;

// Offsets of the parts of a workspace, in elements: each part starts on 16 elements (64 bytes
// of floats, as the kernels' vectors need).
inline std::int64_t part(std::int64_t elements) { return detail::round_up(elements, 16); }

// Offset of the padded input after the flipped kernel in the input gradient's workspace.
inline std::int64_t flipped_elements(const ConvGeometry& g) {
  return detail::round_up(g.oc * g.ic * g.kernel_size(), 16);
}

Conv2dOptions options_of(const ConvGeometry& g) {
  const Window2d& w = g.win;
  return Conv2dOptions{Pair2(w.sh, w.sw), Pair2(w.ph, w.pw), Pair2(w.dh, w.dw),
                       static_cast<int>(g.groups)};
}

// y[n, c, :, :] += b[c] over [N, C, plane].
template <typename T>
void add_channel_bias(std::int64_t n, std::int64_t c, std::int64_t plane, const T* b, T* y) {
  parallel_for(n * c, std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(1, plane)),
               [&](std::int64_t lo, std::int64_t hi) {
                 for (std::int64_t t = lo; t < hi; ++t) {
                   T* yp = y + t * plane;
                   const T bv = b[t % c];
                   for (std::int64_t i = 0; i < plane; ++i) yp[i] += bv;
                 }
               });
}

class Conv2dOp final : public Op {
 public:
  Conv2dOp(ConvGeometry geom, bool has_bias)
      : g_(geom), phase_(PhaseGeometry::of(geom)), has_bias_(has_bias) {}
  static constexpr OpTraits kKinds[] = {{.name = "conv2d", .accepts_relu = true}};
  const OpTraits& traits() const override { return kKinds[0]; }
  // The direct kernels of other groups and dilations apply no epilogue.
  bool accepts_epilogue(Epilogue::Kind kind) const override {
    return g_.dense() && Op::accepts_epilogue(kind);
  }
  // x [N,IC,H,W], w [OC,IC/G,KH,KW] -> y [N,OC,OH,OW]
  OpCost cost(std::span<const Shape> in, const Shape& out) const override {
    const double taps = static_cast<double>(in[1][1] * in[1][2] * in[1][3]);
    const double y = static_cast<double>(out.numel());
    if (in.size() > 2) return {2 * y * taps + y, "2*N*OC*OH*OW*IC*KH*KW + N*OC*OH*OW (bias)"};
    return {2 * y * taps, "2*N*OC*OH*OW*IC*KH*KW"};
  }

  // Strided: x' and k' (Note [Phases]), then the stride-1 kernel's workspace.
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    if (!g_.dense()) return 0;
    const bool f32 = in[0].dtype() == DType::kF32;
    std::int64_t total = f32 ? detail::conv_forward_workspace<float>(g_)
                             : detail::conv_forward_workspace<double>(g_);
    if (phase_) {
      const std::int64_t s1 = f32 ? detail::conv_forward_workspace<float>(phase_->s1)
                                  : detail::conv_forward_workspace<double>(phase_->s1);
      total = std::max(total, part(phase_->x_elements()) + part(phase_->k_elements()) + s1);
    }
    return static_cast<std::size_t>(total) * (f32 ? 4 : 8);
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();                        // [N, IC, H, W]
      const T* k = ctx.inputs[1].data<T>();                        // [OC, IC/G, KH, KW]
      const T* b = has_bias_ ? ctx.inputs[2].data<T>() : nullptr;  // [OC]
      T* y = ctx.output.data<T>();                                 // [N, OC, OH, OW]
      if (!g_.dense()) return detail::conv2d_general_forward(g_, x, k, b, y);
      T* ws = static_cast<T*>(ctx.workspace);
      if (phase_ && detail::all_finite(x, ctx.inputs[0].numel())) {
        T* xs = ws;
        T* ks = xs + part(phase_->x_elements());
        detail::phase_input(*phase_, x, xs);
        detail::phase_kernel(*phase_, k, ks);
        return detail::conv2d_forward_kernel(phase_->s1, xs, ks, b, y,
                                             ks + part(phase_->k_elements()),
                                             detail::output_epilogue<T>(ctx));
      }
      detail::conv2d_forward_kernel(g_, x, k, b, y, ws, detail::output_epilogue<T>(ctx));
    });
  }

  std::vector<Value> vjp(std::span<const Value> in, Value, Value gy) const override {
    const Conv2dOptions o = options_of(g_);
    std::vector<Value> grads = {conv2d_backward_input(gy, in[1], in[0].shape(), o),
                                conv2d_backward_weight(in[0], gy, in[1].shape(), o)};
    if (has_bias_) grads.push_back(conv2d_backward_bias(gy));
    return grads;
  }

 private:
  ConvGeometry g_;
  std::optional<PhaseGeometry> phase_;  // strided: run as stride 1 (Note [Phases])
  bool has_bias_;
};
TBGRAD_REGISTER_OPS(Conv2dOp);

// The forward-conv geometry computing the input gradient (Conv2dBackwardInputOp), when stride is
// 1 and padding < kernel.
std::optional<ConvGeometry> transposed_geometry(const ConvGeometry& g) {
  const Window2d& w = g.win;
  if (!g.dense() || w.sh != 1 || w.sw != 1 || w.ph >= w.kh || w.pw >= w.kw) return std::nullopt;
  const Conv2dOptions o{1, Pair2(w.kh - 1 - w.ph, w.kw - 1 - w.pw)};
  return ConvGeometry(Shape{g.n, g.oc, g.oh, g.ow}, Shape{g.ic, g.oc, w.kh, w.kw}, o);
}

// With stride 1, the input gradient is itself a convolution: the output gradient, padded by
// (KH-1-ph, KW-1-pw), correlated with the kernel flipped in space and transposed in channels.
// That reuses the register-blocked forward kernel and writes every element once. Other strides
// run as stride 1 (Note [Phases] in ops/conv2d_phase.hpp) and then the same way; paddings of a
// kernel's size or more at stride 1 scatter through the window instead; other groups and
// dilations run the direct kernel (ops/conv2d_general.hpp).
//
// The same op is conv_transpose2d (F.conv_transpose2d): its x is the output gradient here, its
// weight [IC, OC/G, KH, KW] the convolution's [OC, IC/G, KH, KW], its output the convolution's
// input, plus an optional bias [OC] (input 2) per channel of that output.
enum class InputGradKind { kBackwardInput, kTranspose };

class Conv2dBackwardInputOp final : public Op {
 public:
  Conv2dBackwardInputOp(ConvGeometry geom, InputGradKind kind, bool has_bias)
      : g_(geom),
        phase_(PhaseGeometry::of(geom)),
        as_conv_(transposed_geometry(phase_ ? phase_->s1 : geom)),
        kind_(kind),
        has_bias_(has_bias) {}
  static constexpr OpTraits kKinds[] = {{.name = "conv2d_backward_input"},
                                        {.name = "conv_transpose2d"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  // gy [N,OC,OH,OW], w [OC,IC/G,KH,KW] -> gx [N,IC,H,W]
  OpCost cost(std::span<const Shape> in, const Shape& out) const override {
    const double flops =
        2 * static_cast<double>(in[0].numel()) * static_cast<double>(in[1][1] * in[1][2] * in[1][3]);
    if (has_bias_) {
      return {flops + static_cast<double>(out.numel()), "2*N*OC*OH*OW*IC*KH*KW + N*IC*H*W (bias)"};
    }
    return {flops, "2*N*OC*OH*OW*IC*KH*KW"};
  }

  // The flipped kernel and the transposed convolution's workspace; strided, then k' and the
  // gradient of x' (Note [Phases]).
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    if (!as_conv_) return 0;
    const std::size_t size = dtype_size(in[0].dtype());
    const std::int64_t padded = size == 4 ? detail::conv_forward_workspace<float>(*as_conv_)
                                          : detail::conv_forward_workspace<double>(*as_conv_);
    std::int64_t total = flipped_elements(phase_ ? phase_->s1 : g_) + padded;
    if (phase_) total += part(phase_->k_elements()) + part(phase_->x_elements());
    return static_cast<std::size_t>(total) * size;
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* gy = ctx.inputs[0].data<T>();                       // [N, OC, OH, OW]
      const T* k = ctx.inputs[1].data<T>();                        // [OC, IC/G, KH, KW]
      const T* b = has_bias_ ? ctx.inputs[2].data<T>() : nullptr;  // [IC]
      T* gx = ctx.output.data<T>();                                // [N, IC, H, W]
      if (!g_.dense()) {
        detail::conv2d_general_input_grad(g_, gy, k, gx);
        if (b) add_channel_bias(g_.n, g_.ic, g_.h * g_.w, b, gx);
        return;
      }
      if (as_conv_ && (!phase_ || detail::all_finite(gy, ctx.inputs[0].numel()))) {
        // Strided: the stride-1 input gradient of x' by k', mapped back to x (Note [Phases]).
        const ConvGeometry& run = phase_ ? phase_->s1 : g_;
        T* flipped = static_cast<T*>(ctx.workspace);  // [IC, OC, KH, KW] of `run`
        T* padded = flipped + flipped_elements(run);
        const T* kr = k;
        T* out = gx;
        if (phase_) {
          T* ks_buf = padded + detail::conv_forward_workspace<T>(*as_conv_);
          out = ks_buf + part(phase_->k_elements());
          detail::phase_kernel(*phase_, k, ks_buf);
          kr = ks_buf;
        }
        const std::int64_t taps = run.kernel_size();
        for (std::int64_t oc = 0; oc < run.oc; ++oc) {
          for (std::int64_t c = 0; c < run.ic; ++c) {
            const T* src = kr + (oc * run.ic + c) * taps;
            T* dst = flipped + (c * run.oc + oc) * taps;
            for (std::int64_t i = 0; i < taps; ++i) dst[i] = src[taps - 1 - i];
          }
        }
        if (!phase_) return detail::conv2d_forward_kernel(*as_conv_, gy, flipped, b, gx, padded);
        detail::conv2d_forward_kernel(*as_conv_, gy, flipped, static_cast<const T*>(nullptr), out,
                                      padded);
        detail::unphase_input_grad(*phase_, static_cast<const T*>(out), gx);
        if (b) add_channel_bias(g_.n, g_.ic, g_.h * g_.w, b, gx);
        return;
      }
      detail::conv2d_input_grad_scatter_kernel(g_, gy, k, gx);
      if (b) add_channel_bias(g_.n, g_.ic, g_.h * g_.w, b, gx);
    });
  }

  // gx is linear in gy and in k: its adjoints are the forward conv and the weight gradient (for
  // conv_transpose2d, the convolution's forward and weight gradient with x as the output
  // gradient), and the bias's the convolution's bias gradient.
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Conv2dOptions o = options_of(g_);
    std::vector<Value> grads = {conv2d(g, in[1], o),
                                conv2d_backward_weight(g, in[0], in[1].shape(), o)};
    if (has_bias_) grads.push_back(conv2d_backward_bias(g));
    return grads;
  }

 private:
  ConvGeometry g_;
  std::optional<PhaseGeometry> phase_;    // strided: run as stride 1 (Note [Phases])
  std::optional<ConvGeometry> as_conv_;  // the input gradient as a forward convolution
  InputGradKind kind_;
  bool has_bias_;
};
TBGRAD_REGISTER_OPS(Conv2dBackwardInputOp);

class Conv2dBackwardWeightOp final : public Op {
 public:
  explicit Conv2dBackwardWeightOp(ConvGeometry geom)
      : g_(geom), phase_(PhaseGeometry::of(geom)) {}
  static constexpr OpTraits kKinds[] = {{.name = "conv2d_backward_weight"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  // x [N,IC,H,W], gy [N,OC,OH,OW] -> gw [OC,IC/G,KH,KW]
  OpCost cost(std::span<const Shape> in, const Shape& out) const override {
    return {2 * static_cast<double>(in[1].numel()) * static_cast<double>(out[1] * out[2] * out[3]),
            "2*N*OC*OH*OW*IC*KH*KW"};
  }

  // Strided: x' and the gradient of k' (Note [Phases]), then the stride-1 kernel's workspace.
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    if (!g_.dense()) return 0;
    const bool f32 = in[0].dtype() == DType::kF32;
    const ConvGeometry& run = phase_ ? phase_->s1 : g_;
    std::int64_t total = f32 ? detail::ConvWeightGradLayout::of<float>(run).total
                             : detail::ConvWeightGradLayout::of<double>(run).total;
    if (phase_) total += part(phase_->x_elements()) + part(phase_->k_elements());
    return static_cast<std::size_t>(total) * (f32 ? 4 : 8);
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      if (!g_.dense()) {
        return detail::conv2d_general_weight_grad(g_, ctx.inputs[0].data<T>(),
                                                  ctx.inputs[1].data<T>(), ctx.output.data<T>());
      }
      T* ws = static_cast<T*>(ctx.workspace);
      if (phase_) {
        T* xs = ws;
        T* gks = xs + part(phase_->x_elements());
        detail::phase_input(*phase_, ctx.inputs[0].data<T>(), xs);
        detail::conv2d_weight_grad_kernel(phase_->s1, static_cast<const T*>(xs),
                                          ctx.inputs[1].data<T>(), gks,
                                          gks + part(phase_->k_elements()));
        return detail::unphase_kernel_grad(*phase_, static_cast<const T*>(gks),
                                           ctx.output.data<T>());
      }
      detail::conv2d_weight_grad_kernel(g_, ctx.inputs[0].data<T>(), ctx.inputs[1].data<T>(),
                                        ctx.output.data<T>(), ws);
    });
  }

  // gk is linear in x and in gy.
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Conv2dOptions o = options_of(g_);
    return {conv2d_backward_input(in[1], g, in[0].shape(), o), conv2d(in[0], g, o)};
  }

 private:
  ConvGeometry g_;
  std::optional<PhaseGeometry> phase_;  // strided: run as stride 1 (Note [Phases])
};
TBGRAD_REGISTER_OPS(Conv2dBackwardWeightOp);

class Conv2dBackwardBiasOp final : public Op {
 public:
  static constexpr OpTraits kKinds[] = {{.name = "conv2d_backward_bias"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape> in, const Shape&) const override {
    return {static_cast<double>(in[0].numel()), "N*OC*OH*OW"};
  }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const Shape& s = ctx.inputs[0].shape();  // [N, OC, OH, OW]
      const T* gy = ctx.inputs[0].data<T>();
      T* gb = ctx.output.data<T>();  // [OC]
      detail::conv2d_bias_grad_kernel(s[0], s[1], s[2] * s[3], gy, gb);
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Shape& s = in[0].shape();
    return {broadcast_to(reshape(g, Shape{s[1], 1, 1}), s)};
  }
};
TBGRAD_REGISTER_OPS(Conv2dBackwardBiasOp);

// Workspaces: each op checks, when it is created, that its kernel's workspace (the layouts of
// ops/conv2d_kernels.hpp) has countable elements, so that workspace_bytes() cannot wrap. These
// are upper bounds of those layouts at the widest vectors (kMaxLanes<float>, the most
// elements), in checked arithmetic; checked::mul(total, 1) keeps a sum within kMaxElements.
constexpr std::int64_t kLanesBound = detail::kMaxLanes<float>;

// PaddedInput: [N, IC * HP * WP + slack], rounded up to a vector.
std::int64_t padded_input_bound(const ConvGeometry& g, const std::string& what) {
  const detail::PaddedInput p = detail::PaddedInput::of(g, kLanesBound);  // slack < 2^36
  const std::int64_t image = checked::add(checked::numel({g.ic, p.hp, p.wp}, what), p.slack, what);
  return checked::add(checked::mul(g.n, image, what), kLanesBound, what);
}

// ConvForwardLayout: the padded input, then for stride 1 the wide output [N, OC, channel] with
// channel <= OH * WP + 9 vectors.
std::int64_t forward_workspace_bound(const ConvGeometry& g, const std::string& what) {
  std::int64_t total = padded_input_bound(g, what);
  if (g.win.sh == 1 && g.win.sw == 1) {
    const std::int64_t wp = g.w + 2 * std::int64_t{g.win.pw};
    const std::int64_t channel = checked::add(checked::mul(g.oh, wp, what), 9 * kLanesBound, what);
    total = checked::add(total, checked::numel({g.n, g.oc, channel}, what), what);
  }
  return checked::mul(total, 1, what);
}

// Conv2dBackwardInputOp: the flipped kernel [IC, OC, KH, KW] (rounded up to 16) and the forward
// workspace of the transposed geometry, when it runs as a convolution.
std::int64_t input_grad_workspace_bound(const ConvGeometry& g, const std::string& what) {
  const std::optional<ConvGeometry> t = transposed_geometry(g);
  if (!t) return 0;
  const std::int64_t flipped =
      checked::add(checked::numel({g.oc, g.ic, g.win.kh, g.win.kw}, what), 16, what);
  return checked::mul(checked::add(flipped, forward_workspace_bound(*t, what), what), 1, what);
}

// ConvWeightGradLayout: the partial sums [chunks, OC, IC, KH, KW] and the vectors of a channel
// block [chunks, 8, KH, KW, lanes], the padded input and the output gradient [N, OC, plane] with
// plane <= OH * (WP + a vector) + a vector.
std::int64_t weight_grad_workspace_bound(const ConvGeometry& g, const std::string& what) {
  const std::int64_t chunks = (g.n + detail::kConvBatchChunk - 1) / detail::kConvBatchChunk;
  const std::int64_t partial = checked::add(
      checked::add(checked::numel({chunks, g.oc, g.ic, g.win.kh, g.win.kw}, what),
                   checked::numel({chunks, detail::kMaxWeightGradBlock, g.win.kh, g.win.kw,
                                   kLanesBound},
                                  what),
                   what),
      kLanesBound, what);
  const std::int64_t wp = g.w + 2 * std::int64_t{g.win.pw};
  const std::int64_t plane = checked::add(
      checked::mul(g.oh, checked::add(wp, kLanesBound, what), what), kLanesBound, what);
  const std::int64_t gy = checked::numel({g.n, g.oc, plane}, what);
  return checked::mul(
      checked::add(checked::add(partial, padded_input_bound(g, what), what), gy, what), 1, what);
}

// A strided convolution's x' and k' (Note [Phases]), each rounded up to 16 elements; 0 when it
// runs as it is. Checked before PhaseGeometry::of forms their sizes.
std::int64_t phase_bound(const ConvGeometry& g, const std::string& what) {
  const Window2d& w = g.win;
  if (!g.dense() || (w.sh == 1 && w.sw == 1)) return 0;
  const std::int64_t kh = (w.kh + w.sh - 1) / w.sh, kw = (w.kw + w.sw - 1) / w.sw;
  const std::int64_t ph = std::min(w.sh, w.kh), pw = std::min(w.sw, w.kw);
  const std::int64_t x = checked::numel({g.n, g.ic, ph, pw, g.oh + kh - 1, g.ow + kw - 1}, what);
  const std::int64_t k = checked::numel({g.oc, g.ic, ph, pw, kh, kw}, what);
  return checked::mul(checked::add(checked::add(x, k, what), 32, what), 1, what);
}

// Which kernel a shape rule is for: each has its own workspace.
enum class ConvKernel { kForward, kInputGrad, kWeightGrad };

// Shape rule shared by the forward op and the gradient kernels.
ConvGeometry check_conv(const char* op, ConvKernel kernel, const Shape& x,
                        const std::string& x_desc, const Shape& weight, const std::string& w_desc,
                        const Conv2dOptions& o) {
  if (x.rank() != 4) {
    shape_error(op, "input " + x_desc + " must be [N, C, H, W] (rank 4), got rank " +
                        std::to_string(x.rank()));
  }
  if (weight.rank() != 4) {
    shape_error(op, "weight " + w_desc + " must be [OC, IC, KH, KW] (rank 4), got rank " +
                        std::to_string(weight.rank()));
  }
  if (o.groups < 1) shape_error(op, "groups must be >= 1, got " + std::to_string(o.groups));
  if (o.groups == 1 && weight[1] != x[1]) {
    shape_error(op, "weight expects " + std::to_string(weight[1]) + " input channels, input " +
                        x_desc + " has " + std::to_string(x[1]) + " (weight " + w_desc + ")");
  }
  if (o.groups > 1) {
    const std::string groups = std::to_string(o.groups);
    if (x[1] % o.groups != 0) {
      shape_error(op, "input " + x_desc + " has " + std::to_string(x[1]) +
                          " channels, not divisible by groups " + groups);
    }
    if (weight[0] % o.groups != 0) {
      shape_error(op, "weight " + w_desc + " has " + std::to_string(weight[0]) +
                          " output channels, not divisible by groups " + groups);
    }
    if (weight[1] != x[1] / o.groups) {
      shape_error(op, "weight " + w_desc + " expects " + std::to_string(weight[1]) +
                          " input channels per group, input " + x_desc + " has " +
                          std::to_string(x[1]) + " / groups " + groups + " = " +
                          std::to_string(x[1] / o.groups) +
                          " (weight must be [OC, IC/groups, KH, KW])");
    }
  }
  if (weight[0] < 1 || weight[2] < 1 || weight[3] < 1) {
    shape_error(op, "weight " + w_desc + " must have at least one output channel and a kernel "
                    "of at least 1x1");
  }
  if (o.stride.h < 1 || o.stride.w < 1) {
    shape_error(op, "stride must be >= 1, got " + o.stride.str());
  }
  if (o.padding.h < 0 || o.padding.w < 0) {
    shape_error(op, "padding must be >= 0, got " + o.padding.str());
  }
  if (o.dilation.h < 1 || o.dilation.w < 1) {
    shape_error(op, "dilation must be >= 1, got " + o.dilation.str());
  }
  // Sizes (graph/checked.hpp): geometry fits in int (the kernel's area too: the weight
  // gradient counts taps in int), the padded input [N, IC, HP, WP], the window view
  // [N, IC, OH, OW, KH, KW] and the output [N, OC, OH, OW] have countable elements.
  const std::string values = "input " + x_desc + ", weight " + w_desc;
  checked::naming(values, [&] {
    const int kh = checked::to_int(weight[2], op, "kernel height");
    const int kw = checked::to_int(weight[3], op, "kernel width");
    checked::window_area(kh, kw, op);
    const int hp = checked::padded_extent(x[2], o.padding.h, op, "height");
    const int wp = checked::padded_extent(x[3], o.padding.w, op, "width");
    checked::numel({x[0], x[1], hp, wp}, op);
  });
  ConvGeometry g(x, weight, o);
  if (g.oh < 1 || g.ow < 1) {
    const std::string dilated =
        g.win.dilated() ? " dilated by " + o.dilation.str() + " (spanning " +
                              std::to_string(std::int64_t{o.dilation.h} * (weight[2] - 1) + 1) +
                              "x" +
                              std::to_string(std::int64_t{o.dilation.w} * (weight[3] - 1) + 1) +
                              ")"
                        : "";
    shape_error(op, "kernel " + std::to_string(weight[2]) + "x" + std::to_string(weight[3]) +
                        dilated + " with padding " + o.padding.str() + " does not fit input " +
                        x_desc);
  }
  checked::naming(values, [&] {
    checked::numel({g.n, g.ic, g.oh, g.ow, weight[2], weight[3]}, op);
    checked::numel({g.n, g.oc, g.oh, g.ow}, op);
    if (!g.dense()) return;  // the direct kernels need no workspace
    const std::string what = std::string(op) + " workspace";
    const std::int64_t phases = phase_bound(g, what);
    const std::optional<PhaseGeometry> phase = PhaseGeometry::of(g);
    const ConvGeometry& run = phase ? phase->s1 : g;
    std::int64_t total = 0;
    switch (kernel) {
      case ConvKernel::kForward:
        total = forward_workspace_bound(run, what);
        // With NaN or infinity in x, the strided kernel runs instead (Note [Phases]).
        if (phase) total = checked::add(total, forward_workspace_bound(g, what), what);
        break;
      case ConvKernel::kInputGrad:
        total = input_grad_workspace_bound(run, what);
        break;
      case ConvKernel::kWeightGrad:
        total = weight_grad_workspace_bound(run, what);
        break;
    }
    checked::mul(checked::add(total, phases, what), 1, what);
  });
  return g;
}

}  // namespace

Value conv2d(Value x, Value weight, Value bias, Conv2dOptions options) {
  detail::require_same_graph("conv2d", x, weight);
  detail::require_float("conv2d", x);
  detail::require_same_dtype("conv2d", x, weight);
  ConvGeometry g = check_conv("conv2d", ConvKernel::kForward, x.shape(), x.describe(),
                              weight.shape(), weight.describe(), options);
  std::vector<Value> ins = {x, weight};
  if (bias.valid()) {
    detail::require_same_graph("conv2d", x, bias);
    detail::require_same_dtype("conv2d", x, bias);
    if (bias.shape().rank() != 1 || bias.shape()[0] != g.oc) {
      shape_error("conv2d", "bias " + bias.describe() + " must be [" + std::to_string(g.oc) +
                                "], one value per output channel of weight " + weight.describe());
    }
    ins.push_back(bias);
  }
  return x.graph().add_op(std::make_shared<Conv2dOp>(g, bias.valid()), ins,
                          Shape{g.n, g.oc, g.oh, g.ow}, x.dtype());
}

Value conv2d(Value x, Value weight, Conv2dOptions options) {
  return conv2d(x, weight, Value(), options);
}

Value conv2d_backward_input(Value grad_out, Value weight, Shape input_shape,
                            Conv2dOptions options) {
  const char* op = "conv2d_backward_input";
  detail::require_same_graph(op, grad_out, weight);
  detail::require_same_dtype(op, grad_out, weight);
  ConvGeometry g = check_conv(op, ConvKernel::kInputGrad, input_shape, input_shape.str(),
                              weight.shape(), weight.describe(), options);
  const Shape expect{g.n, g.oc, g.oh, g.ow};
  if (!(grad_out.shape() == expect)) {
    shape_error(op, "output gradient " + grad_out.describe() + " must be " + expect.str());
  }
  Value ins[] = {grad_out, weight};
  return grad_out.graph().add_op(
      std::make_shared<Conv2dBackwardInputOp>(g, InputGradKind::kBackwardInput, false), ins,
      input_shape, grad_out.dtype());
}

Value conv2d_backward_weight(Value x, Value grad_out, Shape weight_shape, Conv2dOptions options) {
  const char* op = "conv2d_backward_weight";
  detail::require_same_graph(op, x, grad_out);
  detail::require_same_dtype(op, x, grad_out);
  ConvGeometry g = check_conv(op, ConvKernel::kWeightGrad, x.shape(), x.describe(), weight_shape,
                              weight_shape.str(), options);
  const Shape expect{g.n, g.oc, g.oh, g.ow};
  if (!(grad_out.shape() == expect)) {
    shape_error(op, "output gradient " + grad_out.describe() + " must be " + expect.str());
  }
  Value ins[] = {x, grad_out};
  return x.graph().add_op(std::make_shared<Conv2dBackwardWeightOp>(g), ins, weight_shape,
                          x.dtype());
}

Value conv_transpose2d(Value x, Value weight, Value bias, ConvTranspose2dOptions options) {
  const char* op = "conv_transpose2d";
  detail::require_same_graph(op, x, weight);
  detail::require_float(op, x);
  detail::require_same_dtype(op, x, weight);
  const Shape& xs = x.shape();
  const Shape& ws = weight.shape();
  const ConvTranspose2dOptions& o = options;
  if (xs.rank() != 4) {
    shape_error(op, "input " + x.describe() + " must be [N, C, H, W] (rank 4), got rank " +
                        std::to_string(xs.rank()));
  }
  if (ws.rank() != 4) {
    shape_error(op, "weight " + weight.describe() +
                        " must be [IC, OC/groups, KH, KW] (rank 4), got rank " +
                        std::to_string(ws.rank()));
  }
  if (xs[2] < 1 || xs[3] < 1) {
    shape_error(op, "input " + x.describe() + " must have at least one row and column");
  }
  if (o.groups < 1) shape_error(op, "groups must be >= 1, got " + std::to_string(o.groups));
  if (ws[0] != xs[1]) {
    shape_error(op, "weight " + weight.describe() + " expects " + std::to_string(ws[0]) +
                        " input channels, input " + x.describe() + " has " +
                        std::to_string(xs[1]) + " (weight must be [IC, OC/groups, KH, KW])");
  }
  if (xs[1] % o.groups != 0) {
    shape_error(op, "input " + x.describe() + " has " + std::to_string(xs[1]) +
                        " channels, not divisible by groups " + std::to_string(o.groups));
  }
  if (ws[1] < 1 || ws[2] < 1 || ws[3] < 1) {
    shape_error(op, "weight " + weight.describe() +
                        " must have at least one output channel and a kernel of at least 1x1");
  }
  if (o.stride.h < 1 || o.stride.w < 1) {
    shape_error(op, "stride must be >= 1, got " + o.stride.str());
  }
  if (o.padding.h < 0 || o.padding.w < 0) {
    shape_error(op, "padding must be >= 0, got " + o.padding.str());
  }
  if (o.dilation.h < 1 || o.dilation.w < 1) {
    shape_error(op, "dilation must be >= 1, got " + o.dilation.str());
  }
  // PyTorch accepts an output_padding smaller than the stride or the dilation; the extra rows
  // of one at least the stride would need an output gradient larger than x (a cropped
  // convolution), which tbgrad does not have.
  if (o.output_padding.h < 0 || o.output_padding.w < 0 || o.output_padding.h >= o.stride.h ||
      o.output_padding.w >= o.stride.w) {
    shape_error(op, "output_padding must be >= 0 and smaller than the stride " + o.stride.str() +
                        ", got " + o.output_padding.str() + " (input " + x.describe() + ")");
  }
  // Sizes in checked arithmetic, before the output extent is computed.
  std::int64_t oh = 0, ow = 0;
  const std::string values = "input " + x.describe() + ", weight " + weight.describe();
  checked::naming(values, [&] {
    checked::to_int(ws[2], op, "kernel height");
    checked::to_int(ws[3], op, "kernel width");
    auto extent = [&](std::int64_t in, std::int64_t k, int s, int p, int d, int out_pad) {
      const std::int64_t span = checked::add(checked::mul(std::max<std::int64_t>(in - 1, 0), s, op),
                                             checked::mul(k - 1, d, op), op);
      return checked::add(span, std::int64_t{out_pad} + 1, op) - 2 * std::int64_t{p};
    };
    oh = extent(xs[2], ws[2], o.stride.h, o.padding.h, o.dilation.h, o.output_padding.h);
    ow = extent(xs[3], ws[3], o.stride.w, o.padding.w, o.dilation.w, o.output_padding.w);
  });
  if (oh < 1 || ow < 1) {
    shape_error(op, "input " + x.describe() + " with kernel " + std::to_string(ws[2]) + "x" +
                        std::to_string(ws[3]) + ", stride " + o.stride.str() + ", padding " +
                        o.padding.str() + " and dilation " + o.dilation.str() +
                        " gives an empty output (" + std::to_string(oh) + "x" +
                        std::to_string(ow) + ")");
  }
  const std::int64_t oc = checked::naming(values, [&] { return checked::mul(ws[1], o.groups, op); });
  const Shape out{xs[0], oc, oh, ow};
  const Conv2dOptions co{o.stride, o.padding, o.dilation, o.groups};
  // The convolution whose input gradient this is: input `out`, weight `weight`, output x.
  ConvGeometry g = check_conv(op, ConvKernel::kInputGrad, out, out.str(), ws, weight.describe(), co);
  if (g.oh != xs[2] || g.ow != xs[3]) {  // cannot happen with output_padding < stride
    shape_error(op, "internal: the output " + out.str() + " does not map back onto input " +
                        x.describe());
  }
  std::vector<Value> ins = {x, weight};
  if (bias.valid()) {
    detail::require_same_graph(op, x, bias);
    detail::require_same_dtype(op, x, bias);
    if (bias.shape().rank() != 1 || bias.shape()[0] != oc) {
      shape_error(op, "bias " + bias.describe() + " must be [" + std::to_string(oc) +
                          "], one value per output channel (weight " + weight.describe() +
                          ", groups " + std::to_string(o.groups) + ")");
    }
    ins.push_back(bias);
  }
  return x.graph().add_op(
      std::make_shared<Conv2dBackwardInputOp>(g, InputGradKind::kTranspose, bias.valid()), ins,
      out, x.dtype());
}

Value conv_transpose2d(Value x, Value weight, ConvTranspose2dOptions options) {
  return conv_transpose2d(x, weight, Value(), options);
}

Value conv2d_backward_bias(Value grad_out) {
  const char* op = "conv2d_backward_bias";
  if (!grad_out.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, grad_out);
  detail::require_rank(op, grad_out, 4, "output gradient");
  Value ins[] = {grad_out};
  return grad_out.graph().add_op(std::make_shared<Conv2dBackwardBiasOp>(), ins,
                                 Shape{grad_out.shape()[1]}, grad_out.dtype());
}

}  // namespace tbgrad
