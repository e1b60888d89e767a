// Google Benchmark suite for tbgrad's kernels and executor.
//
//   BM_Op/<model>/<fwd|bwd>/<op>/<input shapes>-><output shape>/threads:T
//       Every op the model's training step runs (forward, and the backward nodes grad() adds),
//       at exactly the shapes of that step (batch 32), each alone in a one-op graph timed through
//       Executor::run(). The op object is the one in the model's graph, so stride, padding and
//       transpose flags are the model's. Counters: items_per_second (images/s: 32 per run),
//       bytes_per_second (inputs read once + output written once), GFLOP/s (formula in the
//       label; 2 flops per multiply-add), peak_fraction (GFLOP/s ÷ the measured FMA peak of T
//       threads), per_step (how many nodes of the step have these shapes).
//   BM_TrainStep/<model>/batch:B/threads:T
//       Forward + backward + SGD step as the trainer runs it (outputs loss, logits, gradients).
//       items_per_second is images/s; GFLOP/s counts every node of the step.
//   BM_StepProfile/<model>/threads:T
//       The same step at batch 32 with Executor profiling on: microseconds per step spent in
//       each op kind ("(bwd)" marks generic ops that belong to the backward pass), and in SGD.
//   BM_OptimizerStep/<sgd|momentum|adam>/<model>/threads:T
//       One optimizer step over all of the model's parameters (small random gradients), as
//       Optimizer::step runs it. items_per_second is parameters updated per second.
//   BM_ExecutorOverhead/nodes:N/threads:T
//       A chain of N scale ops on a [1] tensor: what running a node costs beyond its kernel
//       (ns_per_node), and the fixed cost of a run (nodes:1).
//
// The FMA peak (bench/fma_peak.hpp) is measured once at startup and printed in the context
// header; pass --peak_gflops=ONE_THREAD,TWO_THREADS to reuse earlier measurements instead.
// --threads=1,2 sets the thread counts benchmarked (default 1,2). All timings are wall-clock
// (UseRealTime): with worker threads, the main thread's CPU time would undercount.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <tbgrad.hpp>
#include <utility>
#include <vector>

#include "fma_peak.hpp"

namespace {

using namespace tbgrad;

constexpr std::int64_t kOpBatch = 32;
std::vector<int> g_threads = {1, 2};
std::map<int, double> g_peak;  // threads -> GFLOP/s

double peak_for(int threads) {
  auto it = g_peak.find(threads);
  return it != g_peak.end() && it->second > 0 ? it->second : 0;
}

std::string dims(const Shape& s) {
  if (s.rank() == 0) return "scalar";
  std::string r;
  for (int i = 0; i < s.rank(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
  return r;
}

// ---------------------------------------------------------------------------------------------
// The flop model. One multiply-add is 2 flops; comparisons, adds and exps are 1 each. Pooling
// and elementwise ops are memory bound, so their GFLOP/s (and peak_fraction) only compare runs of
// the same op; bytes_per_second is their meaningful counter.

// Each op's arithmetic comes from the op itself (Op::cost).

void fill_input(const Tensor& t, nn::Rng& rng) {
  if (t.dtype() == DType::kI32) {
    for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, static_cast<double>(i % 10));
  } else {
    nn::uniform(t, -1.0, 1.0, rng);
  }
}

// Wall time of the timed loop, measured alongside Google Benchmark's own: the flop counters are
// plain numbers (GFLOP/s, a fraction) rather than Counter rates, which the console would print
// with a "/s" suffix.
class LoopTimer {
 public:
  LoopTimer() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

void set_flop_counters(benchmark::State& state, double flops_per_iteration, int threads,
                       double seconds) {
  if (seconds <= 0 || state.iterations() == 0) return;
  const double gflops = flops_per_iteration * static_cast<double>(state.iterations()) / seconds * 1e-9;
  state.counters["GFLOP/s"] = gflops;
  if (const double peak = peak_for(threads); peak > 0) state.counters["peak_fraction"] = gflops / peak;
}

// ---------------------------------------------------------------------------------------------
// The models' training graphs, kept alive for the whole run: the per-op benchmarks share their
// op objects.

struct Model {
  std::string name;
  std::int64_t batch;
  Graph graph;
  nn::ParamStore store;
  nn::Network net;
  std::vector<Value> grads;
  Model(std::string model, std::int64_t b) : name(std::move(model)), batch(b) {
    net = nn::build_network(name, graph, batch, store);
    grads = grad(net.loss, net.params);
  }
};

// The op nodes a training step runs, in schedule order.
std::vector<int> step_nodes(Model& m) {
  Executor ex(m.graph, {m.net.loss, m.net.logits, m.grads});
  ex.set_profiling(true);
  std::vector<int> ids;
  for (const auto& p : ex.profile()) {
    ids.push_back(p.node);
    if (p.fused_node >= 0) ids.push_back(p.fused_node);  // run inside p's step (Note [Epilogues])
  }
  return ids;
}

double step_flops(Model& m) {
  double total = 0;
  for (int id : step_nodes(m)) {
    const Node& node = m.graph.node(id);
    std::vector<Shape> in;
    for (int i : node.inputs) in.push_back(m.graph.node(i).shape);
    total += node.op->cost(in, node.shape).flops;
  }
  return total;
}

struct OpCase {
  std::shared_ptr<const Op> op;
  std::vector<Shape> in_shapes;
  std::vector<DType> in_dtypes;
  Shape out;
  DType out_dtype;
  bool backward;
  int per_step = 0;
};

void BM_Op(benchmark::State& state, const OpCase* c) {
  const int threads = static_cast<int>(state.range(0));
  ThreadScope scope(threads);
  Graph g;
  nn::Rng rng(7);
  std::vector<Value> ins;
  std::vector<Tensor> data;
  for (std::size_t i = 0; i < c->in_shapes.size(); ++i) {
    ins.push_back(g.input("in" + std::to_string(i), c->in_shapes[i], c->in_dtypes[i]));
    data.emplace_back(c->in_shapes[i], c->in_dtypes[i]);
    fill_input(data.back(), rng);
  }
  Value out = g.add_op(c->op, ins, c->out, c->out_dtype);
  Executor ex(g, {out});
  for (std::size_t i = 0; i < ins.size(); ++i) ex.bind(ins[i], data[i]);
  for (int i = 0; i < 3; ++i) ex.run();
  LoopTimer timer;
  for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores)
    ex.run();
    benchmark::ClobberMemory();
  }
  const double seconds = timer.seconds();
  benchmark::DoNotOptimize(ex[out].raw());

  const OpCost cost = c->op->cost(c->in_shapes, c->out);
  double bytes = static_cast<double>(ex[out].nbytes());
  for (const Tensor& t : data) bytes += static_cast<double>(t.nbytes());
  state.SetItemsProcessed(state.iterations() * kOpBatch);
  state.SetBytesProcessed(static_cast<std::int64_t>(static_cast<double>(state.iterations()) * bytes));
  if (cost.flops > 0) set_flop_counters(state, cost.flops, threads, seconds);
  state.counters["per_step"] = c->per_step;
  state.SetLabel(cost.formula);
}

// Registers a benchmark and hands it to `configure`. Google Benchmark's registry owns the object,
// which clang-analyzer cannot see (it reports a leak inside benchmark.h), so under the analyzer
// nothing is registered.
template <typename Configure, typename... Args>
void add_benchmark(const std::string& name, const Configure& configure, Args&&... args) {
#ifndef __clang_analyzer__
  configure(benchmark::RegisterBenchmark(name.c_str(), std::forward<Args>(args)...));
#else
  (void)name;
  (void)configure;
  ((void)args, ...);
#endif
}

// Runs a benchmark once per thread count of --threads, timed by the wall clock.
void per_thread_count(benchmark::internal::Benchmark* b) {
  for (int t : g_threads) b->Arg(t);
  b->ArgName("threads")->UseRealTime();
}

std::vector<std::unique_ptr<Model>> g_models;
std::vector<std::unique_ptr<OpCase>> g_cases;

void register_op_benchmarks(const std::string& model) {
  auto& m = *g_models.emplace_back(std::make_unique<Model>(model, kOpBatch));
  std::map<std::string, OpCase*> seen;
  std::vector<std::string> order;
  for (int id : step_nodes(m)) {
    const Node& node = m.graph.node(id);
    const bool backward = id > m.net.loss.id();
    std::string key = model + "/" + (backward ? "bwd" : "fwd") + "/" + node.op->name() + "/";
    OpCase c{node.op, {}, {}, node.shape, node.dtype, backward};
    for (std::size_t i = 0; i < node.inputs.size(); ++i) {
      const Node& in = m.graph.node(node.inputs[i]);
      c.in_shapes.push_back(in.shape);
      c.in_dtypes.push_back(in.dtype);
      key += (i ? "," : "") + dims(in.shape);
    }
    key += "->" + dims(node.shape);
    auto it = seen.find(key);
    if (it != seen.end()) {
      ++it->second->per_step;
      continue;
    }
    auto& stored = g_cases.emplace_back(std::make_unique<OpCase>(std::move(c)));
    stored->per_step = 1;
    seen[key] = stored.get();
    order.push_back(key);
  }
  for (const std::string& key : order) add_benchmark("BM_Op/" + key, per_thread_count, BM_Op, seen[key]);
}

// ---------------------------------------------------------------------------------------------

struct Step {
  Model model;
  std::vector<Tensor> params, grads;
  Tensor images, labels;
  std::unique_ptr<Executor> ex;
  std::unique_ptr<nn::SGD> sgd;
  Step(const std::string& name, std::int64_t batch) : model(name, batch) {
    nn::Rng rng(1);
    nn::initialize(model.store, nn::Init::kXavierUniform, rng);
    ex = std::make_unique<Executor>(model.graph,
                                    std::initializer_list<ValueList>{model.net.loss, model.net.logits, model.grads});
    params.assign(model.store.tensors().begin(), model.store.tensors().end());
    for (Value v : model.grads) grads.push_back((*ex)[v]);
    // A small learning rate: the same batch is trained on over and over.
    sgd = std::make_unique<nn::SGD>(params, 0.001);
    images = Tensor({batch, 1, 28, 28}, DType::kF32);
    labels = Tensor({batch}, DType::kI32);
    nn::uniform(images, 0, 1, rng);
    for (std::int64_t i = 0; i < batch; ++i) labels.set(i, static_cast<double>(i % 10));
    ex->bind(model.net.images, images).bind(model.net.labels, labels);
  }
  void run() {
    ex->run();
    sgd->step(grads);
  }
};

void BM_TrainStep(benchmark::State& state, const std::string& model, std::int64_t batch) {
  const int threads = static_cast<int>(state.range(0));
  ThreadScope scope(threads);
  Step step(model, batch);
  for (int i = 0; i < 3; ++i) step.run();
  LoopTimer timer;
  for (auto _ : state) step.run();  // NOLINT(clang-analyzer-deadcode.DeadStores)
  const double seconds = timer.seconds();
  benchmark::DoNotOptimize(step.ex->get(step.model.net.loss).raw());
  state.SetItemsProcessed(state.iterations() * batch);
  set_flop_counters(state, step_flops(step.model), threads, seconds);
  state.counters["arena_KiB"] = static_cast<double>(step.ex->arena_bytes()) / 1024;
}

void BM_StepProfile(benchmark::State& state, const std::string& model) {
  const int threads = static_cast<int>(state.range(0));
  ThreadScope scope(threads);
  Step step(model, kOpBatch);
  for (int i = 0; i < 3; ++i) step.run();
  step.ex->set_profiling(true);
  double sgd_seconds = 0;
  for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores)
    step.ex->run();
    const auto t0 = std::chrono::steady_clock::now();
    step.sgd->step(step.grads);
    sgd_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double n = static_cast<double>(state.iterations());
  std::map<std::string, double> by_kind;
  for (const auto& p : step.ex->profile()) {
    std::string kind = p.label();
    if (p.node > step.model.net.loss.id() && kind.find("backward") == std::string::npos) {
      kind += "(bwd)";
    }
    by_kind[kind] += p.seconds;
  }
  for (const auto& [kind, seconds] : by_kind) state.counters["us:" + kind] = 1e6 * seconds / n;
  state.counters["us:sgd"] = 1e6 * sgd_seconds / n;
  state.SetItemsProcessed(state.iterations() * kOpBatch);
}

void BM_OptimizerStep(benchmark::State& state, const std::string& kind, const std::string& model) {
  const int threads = static_cast<int>(state.range(0));
  ThreadScope scope(threads);
  Model m(model, 1);
  nn::Rng rng(1);
  nn::initialize(m.store, nn::Init::kXavierUniform, rng);
  std::vector<Tensor> params(m.store.tensors().begin(), m.store.tensors().end());
  std::vector<Tensor> grads;
  std::int64_t count = 0;
  for (const Tensor& p : params) {
    grads.emplace_back(p.shape(), p.dtype());
    nn::uniform(grads.back(), -1e-3, 1e-3, rng);
    count += p.numel();
  }
  // A tiny learning rate: the same gradient is applied over and over.
  auto opt = nn::make_optimizer(kind, params, 1e-6);
  for (int i = 0; i < 3; ++i) opt->step(grads);
  for (auto _ : state) opt->step(grads);  // NOLINT(clang-analyzer-deadcode.DeadStores)
  benchmark::DoNotOptimize(params[0].raw());
  state.SetItemsProcessed(state.iterations() * count);
}

void BM_ExecutorOverhead(benchmark::State& state) {
  const auto nodes = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  ThreadScope scope(threads);
  Graph g;
  Value x = g.input("x", Shape{1});
  Value h = x;
  for (std::int64_t i = 0; i < nodes; ++i) h = scale(h, 1.0);
  Executor ex(g, {h});
  Tensor xv({1}, DType::kF32);
  xv.set(0, 1.0);
  ex.bind(x, xv);
  for (int i = 0; i < 10; ++i) ex.run();
  LoopTimer timer;
  for (auto _ : state) ex.run();  // NOLINT(clang-analyzer-deadcode.DeadStores)
  const double ns = 1e9 * timer.seconds();
  const double runs = static_cast<double>(state.iterations());
  state.counters["ns_per_run"] = ns / runs;
  state.counters["ns_per_node"] = ns / runs / static_cast<double>(nodes);
}

// ---------------------------------------------------------------------------------------------

std::vector<int> parse_ints(const char* s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(std::atoi(item.c_str()));
  }
  return out;
}

std::vector<double> parse_doubles(const char* s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(std::atof(item.c_str()));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<double> given_peak;
  // Our flags first; the rest go to Google Benchmark.
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strncmp(argv[i], "--threads=", 10) == 0) {
      g_threads = parse_ints(argv[i] + 10);
    } else if (i > 0 && std::strncmp(argv[i], "--peak_gflops=", 14) == 0) {
      given_peak = parse_doubles(argv[i] + 14);
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  if (g_threads.empty() || *std::min_element(g_threads.begin(), g_threads.end()) < 1) {
    std::fprintf(stderr, "--threads expects a comma-separated list of counts >= 1\n");
    return 1;
  }

  // The peak of the SIMD target in use (TBGRAD_MAX_ISA caps it): one thread, and each thread
  // count benchmarked.
  try {
    benchmark::AddCustomContext("simd_target", tbgrad::isa());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ops: %s\n", e.what());
    return 2;
  }
  if (!given_peak.empty()) {
    g_peak[1] = given_peak[0];
    if (given_peak.size() > 1) g_peak[2] = given_peak[1];
    for (int t : g_threads) {
      if (!g_peak.count(t)) g_peak[t] = given_peak[0] * t;
    }
  } else {
    std::vector<int> counts = g_threads;
    counts.push_back(1);
    std::sort(counts.begin(), counts.end());
    counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
    for (int t : counts) {
      g_peak[t] = tbgrad::bench::measure_fma_peak(t, 0.05).gflops;
    }
  }
  for (const auto& [t, gflops] : g_peak) {
    char value[64];
    std::snprintf(value, sizeof value, "%.1f", gflops);
    benchmark::AddCustomContext("fma_peak_gflops_" + std::to_string(t) + "thread" + (t > 1 ? "s" : ""),
                                value);
  }

  for (const std::string& model : tbgrad::nn::model_names()) register_op_benchmarks(model);
  for (const std::string& model : tbgrad::nn::model_names()) {
    for (std::int64_t batch : {32, 1}) {
      add_benchmark("BM_TrainStep/" + model + "/batch:" + std::to_string(batch), per_thread_count,
                    BM_TrainStep, model, batch);
    }
  }
  for (const std::string& model : tbgrad::nn::model_names()) {
    add_benchmark("BM_StepProfile/" + model, per_thread_count, BM_StepProfile, model);
  }
  for (const char* kind : {"sgd", "momentum", "adam"}) {
    for (const std::string& model : tbgrad::nn::model_names()) {
      add_benchmark(std::string("BM_OptimizerStep/") + kind + "/" + model, per_thread_count,
                    BM_OptimizerStep, std::string(kind), model);
    }
  }
  add_benchmark(
      "BM_ExecutorOverhead",
      [](benchmark::internal::Benchmark* b) {
        for (int t : g_threads) b->Args({1, t})->Args({100, t});
        b->ArgNames({"nodes", "threads"})->UseRealTime();
      },
      BM_ExecutorOverhead);

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
