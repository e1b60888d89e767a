#include "nn/summary.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <set>

#include "graph/graph.hpp"
#include "graph/op.hpp"

namespace tbgrad::nn {
namespace {

// 1234567 -> "1,234,567" (mult-adds are whole numbers for the library's ops; a fraction is
// rounded).
std::string grouped(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  std::string digits = buf, out;
  const std::size_t start = digits[0] == '-' ? 1 : 0;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > start && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

ModelSummary summarize(const ModelFn& model, std::int64_t batch) {
  if (batch < 1) throw Error("summarize: batch size must be positive, got " + std::to_string(batch));
  Graph g;
  ParamStore store;
  const ModelGraph m = model(g, store, batch);
  (void)m;
  ModelSummary s;
  s.batch = batch;
  std::set<int> counted;
  for (int id = 0; id < g.size(); ++id) {
    const Node& n = g.node(id);
    if (n.kind != NodeKind::kOp) continue;
    SummaryRow row;
    row.op = n.op->name();
    row.output = n.shape;
    std::vector<Shape> in;
    for (int i : n.inputs) {
      const Node& x = g.node(i);
      in.push_back(x.shape);
      if (x.kind != NodeKind::kParam) continue;
      row.params.push_back(x.name);
      if (counted.insert(i).second) row.param_count += x.shape.numel();
    }
    row.mult_adds = n.op->cost(in, n.shape).flops / 2;
    s.total_params += row.param_count;
    s.total_mult_adds += row.mult_adds;
    s.rows.push_back(std::move(row));
  }
  return s;
}

std::string ModelSummary::table() const {
  std::vector<std::array<std::string, 4>> cells;
  cells.push_back({"Op", "Output shape", "Params", "Mult-adds"});
  for (const SummaryRow& r : rows) {
    std::string op = r.op;
    if (!r.params.empty()) {
      op += " (";
      for (std::size_t i = 0; i < r.params.size(); ++i) op += (i ? ", " : "") + r.params[i];
      op += ")";
    }
    cells.push_back({op, r.output.str(), r.param_count ? grouped(static_cast<double>(r.param_count)) : "-",
                     grouped(r.mult_adds)});
  }
  std::array<std::size_t, 4> width{};
  for (const auto& c : cells) {
    for (std::size_t k = 0; k < 4; ++k) width[k] = std::max(width[k], c[k].size());
  }
  std::size_t line = 3 * 3;
  for (std::size_t w : width) line += w;
  const std::string rule(line, '-');
  std::string out = rule + "\n";
  for (std::size_t r = 0; r < cells.size(); ++r) {
    const auto& c = cells[r];
    out += c[0] + std::string(width[0] - c[0].size() + 3, ' ');
    out += c[1] + std::string(width[1] - c[1].size() + 3, ' ');
    out += std::string(width[2] - c[2].size(), ' ') + c[2] + "   ";
    out += std::string(width[3] - c[3].size(), ' ') + c[3] + "\n";
    if (r == 0) out += rule + "\n";
  }
  out += rule + "\n";
  out += "Batch size: " + std::to_string(batch) + "\n";
  out += "Total params: " + grouped(static_cast<double>(total_params)) + "\n";
  out += "Total mult-adds: " + grouped(total_mult_adds) + " (" +
         grouped(total_mult_adds / static_cast<double>(batch)) + " per example)\n";
  out += rule + "\n";
  return out;
}

}  // namespace tbgrad::nn
