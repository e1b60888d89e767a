// Runs a chosen set of graph outputs. Made once; run many times.
//
// Note [Buffer plan]: the constructor finds the nodes the outputs need, orders them by creation
// (a valid schedule, since the graph is append-only), and gives every op output and op workspace
// an offset in one arena. A buffer is released after its last consumer ran, so later nodes reuse
// it; outputs are never released. After construction, bind() and run() never allocate.
//
// Note [One run at a time]: an Executor owns one arena and one set of step tensors, so two
// threads running (or binding) the same executor at once would overwrite each other's
// intermediate values. run() and bind() detect that with an atomic flag and throw Error on the
// second caller; different executors (also of the same graph) may run concurrently.
//
// A ReLU (or a ReLU's gradient) that alone reads its producer's output runs inside the
// producer's kernel (Note [Epilogues] in graph/op.hpp): the same bits, one pass over memory
// fewer. ExecutorOptions::fuse = false turns that off.
#pragma once

#include <atomic>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/graph/op.hpp"
#include "tbgrad/graph/tensor.hpp"

namespace tbgrad {

struct ExecutorOptions {
  bool fuse = true;  // run ReLUs and their gradients inside their producers (Note [Epilogues])
};

// Lets the constructor take a mix of single values and lists: Executor ex(g, {loss, grads}).
class ValueList {
 public:
  ValueList(Value v) : values_{v} {}  // NOLINT(google-explicit-constructor)
  ValueList(const std::vector<Value>& vs) : values_(vs) {}  // NOLINT(google-explicit-constructor)
  const std::vector<Value>& values() const { return values_; }

 private:
  std::vector<Value> values_;
};

class Executor {
 public:
  Executor(Graph& graph, std::initializer_list<ValueList> outputs, ExecutorOptions options = {});
  Executor(Graph& graph, std::span<const Value> outputs, ExecutorOptions options = {});

  // Makes `input` read `t` on following runs (no copy: `t` must stay alive and unchanged while
  // running). Shape and dtype must match the input exactly.
  Executor& bind(Value input, const Tensor& t);
  void run();

  // The value of an output (or of any leaf) after run(). Op results other than the requested
  // outputs may have been overwritten and are not available. An input's value is the tensor
  // last bound to it (an Error before the first bind).
  const Tensor& get(Value v) const;
  const Tensor& operator[](Value v) const { return get(v); }

  // Per-step timing, for finding hot ops: when enabled, run() adds each step's wall time to
  // its entry of profile() (one entry per step, in schedule order).
  struct StepProfile {
    const char* op;
    int node;
    Shape shape;
    double seconds = 0;
    std::int64_t calls = 0;
    const char* fused = nullptr;  // the op run as this step's epilogue, if any
    int fused_node = -1;
    // "op", or "op+fused" for a fused step.
    std::string label() const { return fused ? std::string(op) + "+" + fused : std::string(op); }
  };
  void set_profiling(bool on);

  // Note [Run info] (graph/op.hpp): the mode, step, seed and first example's index the kernels
  // of following runs see. Default: training mode, step 0, seed 0, first example 0.
  void set_run_info(const RunInfo& info) { run_info_ = info; }
  const RunInfo& run_info() const { return run_info_; }
  // Shorthands: training (true) or evaluation (false) mode, the other fields kept.
  void set_training(bool training) { run_info_.training = training; }
  const std::vector<StepProfile>& profile() const { return profile_; }

  std::size_t arena_bytes() const { return arena_bytes_; }
  // Bytes the op outputs and workspaces would need without reuse; compare with arena_bytes().
  std::size_t unplanned_bytes() const { return unplanned_bytes_; }
  int num_steps() const { return static_cast<int>(steps_.size()); }
  // Steps that run a consumer as their epilogue (Note [Epilogues]).
  int num_fused() const {
    int k = 0;
    for (const Step& s : steps_) k += s.fused >= 0 ? 1 : 0;
    return k;
  }
  const std::vector<Value>& outputs() const { return outputs_; }

 private:
  struct Step {
    const Op* op = nullptr;
    int node = -1;
    std::vector<Tensor> inputs;  // views; input-node entries are replaced by bind()
    Tensor output;
    void* workspace = nullptr;
    int fused = -1;  // the consumer node run as the epilogue, or -1
    Epilogue::Kind epilogue_kind = Epilogue::Kind::kNone;
    Tensor epilogue_mask;
    Epilogue epilogue() const { return {epilogue_kind, &epilogue_mask}; }
  };
  // Note [Epilogues]: by producer node, the consumer run inside it.
  struct Fusion {
    int consumer = -1;
    int mask = -1;
    Epilogue::Kind kind = Epilogue::Kind::kNone;
  };
  struct Fusions {
    std::vector<Fusion> by_producer;  // by node id
    std::vector<char> absorbed;       // by node id: runs as another step's epilogue
  };
  struct InputUse {
    std::size_t step;
    std::size_t slot;
  };

  // Note [Buffer plan] in phases, which plan() runs in this order (graph/executor.cpp).
  struct BufferPlan;  // the tables one phase hands to the next
  void plan();
  void mark_needed();
  Fusions fuse_epilogues() const;
  BufferPlan list_steps(const Fusions& fusions) const;
  void find_last_uses(BufferPlan& bp) const;
  void assign_offsets(BufferPlan& bp);
  void make_steps(const BufferPlan& bp, const Fusions& fusions);
  void run_steps();

  Graph& graph_;
  std::vector<Value> outputs_;
  ExecutorOptions options_;
  std::vector<Step> steps_;
  std::vector<Tensor> values_;                 // by node id: what get() returns
  std::vector<std::vector<InputUse>> uses_;    // by node id: where an input node is read
  std::vector<char> needed_;                   // by node id
  std::vector<char> bound_;                    // by node id
  std::vector<StepProfile> profile_;
  bool profiling_ = false;
  RunInfo run_info_;
  std::atomic<bool> running_{false};  // Note [One run at a time]
  std::shared_ptr<void> arena_;
  std::size_t arena_bytes_ = 0;
  std::size_t unplanned_bytes_ = 0;
};

// std::make_unique<Executor>(g, {loss, grads}) cannot work (a braced list cannot be forwarded
// through make_unique's parameter pack); this can: auto ex = make_executor(g, {loss, grads}).
inline std::unique_ptr<Executor> make_executor(Graph& graph, std::initializer_list<ValueList> outputs) {
  return std::make_unique<Executor>(graph, outputs);
}

}  // namespace tbgrad
