// A model's summary: each op's output shape, the parameters it reads and its multiply-adds, and
// the totals, as a data structure and as a printable table (like torchinfo's).
//
//   nn::ModelSummary s = nn::summarize(nn::model_fn("seed"), 32);
//   std::cout << s.table();
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tbgrad/graph/tensor.hpp"
#include "tbgrad/nn/params.hpp"
#include "tbgrad/nn/train.hpp"

namespace tbgrad::nn {

struct SummaryRow {
  std::string op;                    // the op's name ("conv2d", "matmul", "relu", ...)
  Shape output;                      // its output's shape, for the summary's batch size
  std::vector<std::string> params;   // the parameters it reads directly, by name
  std::int64_t param_count = 0;      // their elements (a parameter read twice counts once,
                                     // at its first reader)
  double mult_adds = 0;              // Op::cost's flops / 2
};

struct ModelSummary {
  std::int64_t batch = 0;
  std::vector<SummaryRow> rows;  // the forward graph's ops, in the order the model built them
  std::int64_t total_params = 0;  // = the model's ParamStore::count()
  double total_mult_adds = 0;
  // The table: one line per op (op, output shape, parameters, mult-adds), then the totals.
  std::string table() const;
};

// Builds `model` for a batch of `batch` examples (its forward graph only: no gradients) and
// summarises it. The parameters are the model's own, created in a store of the summary's.
ModelSummary summarize(const ModelFn& model, std::int64_t batch);

}  // namespace tbgrad::nn
