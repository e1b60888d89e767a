// The op table's cases (tests/op_cases.hpp) of batched matmul (ops/matmul.hpp, Note [Batched
// matmul] in ops/matmul.cpp): operands of rank 3 or more, their batch axes broadcast, every
// transpose flag combination, against torch.matmul with x.transpose(-1, -2) for a flag. A stack
// of matrices times a 2-D b without transpose_a is one 2-D product (the op "matmul" on a
// reshaped a); every other combination is the op "batched_matmul".
#include <cstdint>
#include <string>
#include <vector>

#include "op_case_util.hpp"

namespace tbgrad::testing::cases {
namespace {

struct BmmRow {
  std::vector<std::int64_t> a_batch, b_batch;  // the batch axes; none: a 2-D operand
  std::int64_t m, k, n;
};

const BmmRow kBmmRows[] = {
    {{2}, {2}, 3, 4, 5},              // [2,3,4] x [2,4,5]
    {{2, 1}, {5}, 3, 4, 2},           // [2,1,3,4] x [5,4,2]: both operands broadcast
    {{}, {2}, 3, 4, 5},               // 2-D x 3-D
    {{2}, {}, 3, 4, 5},               // 3-D x 2-D
    {{3, 2}, {}, 2, 3, 4},            // 4-D x 2-D
    {{}, {2, 3}, 4, 3, 2},            // 2-D x 4-D
    {{1, 3}, {4, 1}, 1, 1, 1},        // 1x1 matrices, a size-1 batch axis on each side
    {{3, 1}, {1}, 1, 5, 1},           // M = N = 1, b's batch of 1 stretched
    {{1}, {1}, 4, 1, 3},              // K = 1: outer products
    {{3}, {3}, 7, 9, 11},             // odd sizes
    {{2, 3}, {3}, 17, 33, 9},         // register tiles and vector remainders, rank 4 x 3
    {{2, 3}, {2, 3}, 5, 4, 5},        // attention's [B, H, T, D] shapes
    {{2, 2, 2}, {2, 1, 2}, 3, 2, 4},  // rank 5
    {{70}, {70}, 2, 3, 4},            // more matrices than the kernel's slots
    {{4}, {4}, 64, 100, 70},          // matrices big enough for the 2-D kernel's parallel path
};

Shape with_batch(const std::vector<std::int64_t>& batch, std::int64_t rows, std::int64_t cols) {
  std::vector<std::int64_t> d = batch;
  d.push_back(rows);
  d.push_back(cols);
  return Shape(std::span<const std::int64_t>(d));
}

}  // namespace

void add_bmm_cases(Table& t) {
  for (const BmmRow& r : kBmmRows) {
    for (const bool ta : {false, true}) {
      for (const bool tb : {false, true}) {
        const MatmulOptions o{.transpose_a = ta, .transpose_b = tb};
        const Shape as = ta ? with_batch(r.a_batch, r.k, r.m) : with_batch(r.a_batch, r.m, r.k);
        const Shape bs = tb ? with_batch(r.b_batch, r.n, r.k) : with_batch(r.b_batch, r.k, r.n);
        const bool folded = r.b_batch.empty() && !ta;
        t.push_back({.op = folded ? "matmul" : "batched_matmul",
                     .name = std::string(folded ? "batched_" : "") + (ta ? "At" : "A") + "_" +
                             (tb ? "Bt" : "B") + "_a" + shape_name(as) + "_b" + shape_name(bs),
                     .inputs = {uniform("a", as), uniform("b", bs)},
                     .build = [o](Graph&, Inputs in) { return matmul(in[0], in[1], o); },
                     .torch = std::string("torch.matmul(") + (ta ? "a.transpose(-1, -2)" : "a") +
                              ", " + (tb ? "b.transpose(-1, -2)" : "b") + ")",
                     .options = o});
      }
    }
  }
}

}  // namespace tbgrad::testing::cases
