// Note [Kernel export]: the one way a kernel family compiled per SIMD target (Highway's
// foreach_target.h re-includes its .cpp once per target) is exported and dispatched. The family
// lists its kernels once, in a macro taking (X, T, S): for each kernel
//   X(Entry##S, wrapper, impl, (parameters using T), (arguments))
// where impl is the family's template, T its element type and S the suffix naming it. Then
//   TBGRAD_KERNEL_ENTRIES(LIST), in the per-target namespace after the kernels, defines EntryF32
//     and EntryF64, each calling impl(arguments) with T = float or double; and
//   TBGRAD_KERNEL_EXPORTS(LIST), under `#if HWY_ONCE` in namespace tbgrad, exports them
//     (HWY_EXPORT) and defines detail::wrapper(parameters) for both types: it calls the best
//     target the CPU has (HWY_DYNAMIC_DISPATCH) and ends with end_vector_kernel() (Note [Upper
//     vector state] in graph/parallel.hpp).
// The wrappers are the functions the family's header declares, once per type.
#pragma once

#include "graph/parallel.hpp"

// The macros' T is a type, which no parentheses can enclose.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define TBGRAD_KERNEL_ENTRY_(entry, wrapper, impl, params, args) \
  void entry params { impl args; }
#define TBGRAD_KERNEL_EXPORT_(entry, wrapper, impl, params, args) \
  HWY_EXPORT(entry);                                              \
  namespace detail {                                              \
  void wrapper params {                                           \
    HWY_DYNAMIC_DISPATCH(entry) args;                             \
    end_vector_kernel();                                          \
  }                                                               \
  }
// NOLINTEND(bugprone-macro-parentheses)

#define TBGRAD_KERNEL_ENTRIES(LIST)            \
  LIST(TBGRAD_KERNEL_ENTRY_, float, F32)       \
  LIST(TBGRAD_KERNEL_ENTRY_, double, F64)
#define TBGRAD_KERNEL_EXPORTS(LIST)            \
  LIST(TBGRAD_KERNEL_EXPORT_, float, F32)      \
  LIST(TBGRAD_KERNEL_EXPORT_, double, F64)
