#include "nn/train/model_graph.hpp"

#include <algorithm>

#include "graph/parallel.hpp"

namespace tbgrad::nn::detail {

std::string say(const Context& context, std::int64_t examples) {
  return context ? context(examples) : std::string();
}

ModelGraph build_model(const ModelFn& model, Graph& g, ParamStore& store, std::int64_t examples,
                       const Context& context) {
  if (!context) return model(g, store, examples);
  try {
    return model(g, store, examples);
  } catch (const ShapeError& e) {
    throw ShapeError(context(examples) + e.what());
  } catch (const ThreadStartError&) {
    throw;
  } catch (const Error& e) {
    throw Error(context(examples) + e.what());
  }
}

Context micro_batch_context(std::int64_t batch, std::int64_t micro) {
  return [batch, micro](std::int64_t examples) {
    return "Trainer: building the model for a micro-batch of " + std::to_string(examples) +
           " examples (a batch of " + std::to_string(batch) + " runs as micro-batches of " +
           std::to_string(micro) + "; TrainerOptions::micro_batch = " + std::to_string(batch) +
           " keeps it whole): ";
  };
}

void check_model(const ModelGraph& m, const Graph& g, const std::vector<std::string>& names,
                 std::int64_t b, const std::string& context) {
  const auto fail = [&](const std::string& what) { throw Error(context + "model builder: " + what); };
  const std::pair<const char*, const Value*> fields[] = {
      {"inputs", &m.inputs}, {"labels", &m.labels}, {"loss", &m.loss}, {"outputs", &m.outputs}};
  for (const auto& [name, v] : fields) {
    if (!v->valid()) fail(std::string("ModelGraph::") + name + " is not set");
    if (&v->graph() != &g) fail(std::string("ModelGraph::") + name + " is not a value of the graph");
  }
  const std::string at = " (batch " + std::to_string(b) + ")";
  const Node& in = g.node(m.inputs);
  if (in.kind != NodeKind::kInput || in.dtype != DType::kF32 || in.shape.rank() < 1 ||
      in.shape[0] != b) {
    fail("ModelGraph::inputs must be an f32 graph input with the batch first, [" +
         std::to_string(b) + ", ...]" + at + ", got " + m.inputs.describe() + " " +
         dtype_name(in.dtype));
  }
  const Node& lab = g.node(m.labels);
  const bool classes = lab.kind == NodeKind::kLabels && lab.shape == Shape{b};
  const bool targets = lab.kind == NodeKind::kInput && lab.dtype == DType::kF32 &&
                       lab.shape.rank() >= 1 && lab.shape[0] == b;
  if (!classes && !targets) {
    const bool input = lab.kind == NodeKind::kInput || lab.kind == NodeKind::kLabels;
    fail("ModelGraph::labels must be the graph's class labels input (Graph::input_labels) of "
         "shape [" + std::to_string(b) + "], or an f32 graph input of targets with the batch "
         "first, [" + std::to_string(b) + ", ...]" + at + ", got " + m.labels.describe() +
         (input ? "" : " (not a graph input)"));
  }
  if (m.loss.shape().numel() != 1) {
    fail("ModelGraph::loss must be one number (the batch's mean loss), got " + m.loss.describe());
  }
  if (m.outputs.shape().rank() < 1 || m.outputs.shape()[0] != b) {
    fail("ModelGraph::outputs must have the batch first, [" + std::to_string(b) + ", ...]" + at +
         ", got " + m.outputs.describe());
  }
  std::vector<char> needed(static_cast<std::size_t>(g.size()), 0);  // by the loss or outputs
  std::vector<int> todo = {m.loss.id(), m.outputs.id()};
  while (!todo.empty()) {
    const int id = todo.back();
    todo.pop_back();
    if (needed[static_cast<std::size_t>(id)]) continue;
    needed[static_cast<std::size_t>(id)] = 1;
    for (const int i : g.node(id).inputs) todo.push_back(i);
  }
  for (const Value& v : g.inputs()) {
    if (v == m.inputs || v == m.labels || !needed[static_cast<std::size_t>(v.id())]) continue;
    fail("the graph's input " + v.describe() + at +
         " is neither ModelGraph::inputs nor ModelGraph::labels; the trainer and the evaluator "
         "feed only those two (build anything else the model needs from them or from "
         "parameters)");
  }
  const auto& params = g.params();
  bool same = params.size() == names.size();
  for (std::size_t i = 0; same && i < params.size(); ++i) same = params[i].name() == names[i];
  if (!same) {
    fail("its graph's parameters must be the store's, each used once and in the order created "
         "(ask ParamStore::param once per parameter and reuse the Value)");
  }
}

bool has_accuracy(const ModelGraph& m) {
  return m.labels.dtype() == DType::kI32 && m.labels.shape().rank() == 1 &&
         m.outputs.shape().rank() == 2;
}

std::int64_t count_correct(const Tensor& outputs, const Tensor& labels,
                           std::vector<std::int64_t>* confusion) {
  const std::int64_t b = outputs.shape()[0];
  const std::int64_t c = outputs.numel() / std::max<std::int64_t>(b, 1);
  const float* out = outputs.data<float>();
  const std::int32_t* lab = labels.data<std::int32_t>();
  std::int64_t ok = 0;
  for (std::int64_t i = 0; i < b; ++i) {
    const float* row = out + i * c;
    const auto pred = static_cast<std::int64_t>(std::max_element(row, row + c) - row);
    ok += pred == lab[i];
    if (confusion && lab[i] >= 0 && lab[i] < c) {
      ++(*confusion)[static_cast<std::size_t>(lab[i] * c + pred)];
    }
  }
  return ok;
}

Part::Part(const ModelFn& model, ParamStore& store, std::int64_t b, const Context& context)
    : batch(b) {
  m = build_model(model, g, store, b, context);
  check_model(m, g, store.names(), b, say(context, b));
  inputs = Tensor(m.inputs.shape(), DType::kF32);
  labels = Tensor(m.labels.shape(), m.labels.dtype());
  classes = has_accuracy(m);
}

}  // namespace tbgrad::nn::detail
