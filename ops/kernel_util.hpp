// Internal helpers shared by op implementations (not installed as public API).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

#include "graph/graph.hpp"
#include "graph/op.hpp"
#include "graph/parallel.hpp"
#include "graph/tensor.hpp"
#include "ops/simd.hpp"

namespace tbgrad::detail {

// Calls fn.template operator()<T>() with T = float or double per `dtype`.
template <typename Fn>
void dispatch_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      fn.template operator()<float>();
      return;
    case DType::kF64:
      fn.template operator()<double>();
      return;
    case DType::kI32:
      break;
  }
  throw Error("kernel called on a non-floating tensor");
}

// The context's epilogue (Note [Epilogues] in graph/op.hpp) as the kernels take it.
template <typename T>
OutputEpilogue<T> output_epilogue(const KernelContext& ctx) {
  switch (ctx.epilogue.kind) {
    case Epilogue::Kind::kNone:
      break;
    case Epilogue::Kind::kRelu:
      return {OutputEpilogue<T>::kRelu, nullptr};
    case Epilogue::Kind::kReluMask:
      return {OutputEpilogue<T>::kReluMask, ctx.epilogue.mask->data<T>()};
  }
  return {};
}

// Shape-rule checks that read the same in every op.
inline void require_float(const char* op, const Value& v) {
  if (v.dtype() == DType::kI32) {
    shape_error(op, "input " + v.describe() + " must be floating point (f32 or f64), not i32");
  }
}

inline void require_same_dtype(const char* op, const Value& a, const Value& b) {
  if (a.dtype() != b.dtype()) {
    shape_error(op, std::string("inputs must have the same dtype, got ") + dtype_name(a.dtype()) +
                        " for " + a.describe() + " and " + dtype_name(b.dtype()) + " for " +
                        b.describe());
  }
}

inline void require_same_graph(const char* op, const Value& a, const Value& b) {
  if (!a.valid() || !b.valid()) shape_error(op, "an input is an invalid (empty) Value");
  if (&a.graph() != &b.graph()) shape_error(op, "inputs belong to different graphs");
}

inline void require_rank(const char* op, const Value& v, int rank, const char* what) {
  if (v.shape().rank() != rank) {
    shape_error(op, std::string(what) + " must have rank " + std::to_string(rank) + ", " +
                        v.describe() + " has rank " + std::to_string(v.shape().rank()));
  }
}

// Index arithmetic for broadcasting operands a and b to `out`, fixed when the graph is built.
struct BroadcastPlan {
  int rank = 0;
  std::array<std::int64_t, Shape::kMaxRank> out{};
  std::array<std::int64_t, Shape::kMaxRank> a_stride{}, b_stride{};  // 0 on stretched dims
  bool same = false;                                                  // no broadcasting at all

  BroadcastPlan(const Shape& sa, const Shape& sb, const Shape& so) {
    rank = so.rank();
    same = sa == so && sb == so;
    auto strides = [&](const Shape& s, std::array<std::int64_t, Shape::kMaxRank>& st) {
      std::int64_t stride = 1;
      for (int i = rank - 1; i >= 0; --i) {
        const int j = i - (rank - s.rank());
        const std::int64_t d = j >= 0 ? s[j] : 1;
        st[static_cast<std::size_t>(i)] = d == 1 ? 0 : stride;
        stride *= d;
      }
    };
    for (int i = 0; i < rank; ++i) out[static_cast<std::size_t>(i)] = so[i];
    strides(sa, a_stride);
    strides(sb, b_stride);
  }

  std::int64_t inner() const { return rank ? out[static_cast<std::size_t>(rank - 1)] : 1; }

  // Offsets of a and b at the start of row `row` (all dims but the last).
  void row_offsets(std::int64_t row, std::int64_t& oa, std::int64_t& ob) const {
    oa = ob = 0;
    for (int i = rank - 2; i >= 0; --i) {
      const auto k = static_cast<std::size_t>(i);
      const std::int64_t idx = row % out[k];
      row /= out[k];
      oa += idx * a_stride[k];
      ob += idx * b_stride[k];
    }
  }
};

// Elements per task of the elementwise kernels (ops/elementwise.cpp, ops/math*.cpp) below which
// splitting costs more than it saves (measured on the reference CNN's shapes; see
// docs/performance.md).
constexpr std::int64_t kElementwiseGrain = 16384;

// y = f(a, b) over the broadcast shape `p` was planned for: a parallel_for over rows of the
// output's last dimension (over elements when nothing broadcasts); each element is written by
// one task, so the result does not depend on the thread count.
template <typename T, typename F>
void broadcast_apply(const BroadcastPlan& p, const T* a, const T* b, T* y, std::int64_t numel,
                     F f) {
  if (p.same) {
    parallel_for(numel, kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) y[i] = f(a[i], b[i]);
    });
    return;
  }
  const std::int64_t inner = p.inner();
  const std::int64_t rows = inner ? numel / inner : 0;
  const std::int64_t sa = p.rank ? p.a_stride[static_cast<std::size_t>(p.rank - 1)] : 0;
  const std::int64_t sb = p.rank ? p.b_stride[static_cast<std::size_t>(p.rank - 1)] : 0;
  const std::int64_t grain = std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(inner, 1));
  parallel_for(rows, grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t r = lo; r < hi; ++r) {
      std::int64_t oa, ob;
      p.row_offsets(r, oa, ob);
      const T* ar = a + oa;
      const T* br = b + ob;
      T* yr = y + r * inner;
      if (sa && sb) {
        for (std::int64_t i = 0; i < inner; ++i) yr[i] = f(ar[i], br[i]);
      } else if (sa) {
        const T bv = br[0];
        for (std::int64_t i = 0; i < inner; ++i) yr[i] = f(ar[i], bv);
      } else if (sb) {
        const T av = ar[0];
        for (std::int64_t i = 0; i < inner; ++i) yr[i] = f(av, br[i]);
      } else {
        const T v = f(ar[0], br[0]);
        for (std::int64_t i = 0; i < inner; ++i) yr[i] = v;
      }
    }
  });
}

}  // namespace tbgrad::detail
