#include "graph/executor.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iterator>
#include <limits>
#include <map>

#include "graph/isa.hpp"
#include "graph/op.hpp"
#include "graph/parallel.hpp"

namespace tbgrad {
namespace {

std::size_t aligned_size(std::size_t bytes) {
  return (bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
}

// Offsets in a virtual arena: best-fit from freed blocks, else grow at the end. Freed neighbours
// merge, so the arena stays close to the peak of simultaneously live bytes.
class OffsetAllocator {
 public:
  std::size_t allocate(std::size_t bytes) {
    bytes = aligned_size(std::max<std::size_t>(bytes, 1));
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second >= bytes && (best == free_.end() || it->second < best->second)) best = it;
    }
    if (best != free_.end()) {
      std::size_t offset = best->first;
      std::size_t remaining = best->second - bytes;
      free_.erase(best);
      if (remaining) free_[offset + bytes] = remaining;
      return offset;
    }
    // Extend: if the last free block touches the end, grow from its start.
    if (!free_.empty()) {
      auto last = std::prev(free_.end());
      if (last->first + last->second == end_) {
        std::size_t offset = last->first;
        free_.erase(last);
        end_ = offset + bytes;
        return offset;
      }
    }
    std::size_t offset = end_;
    if (__builtin_add_overflow(end_, bytes, &end_)) {
      throw Error("Executor: the buffer plan needs more bytes than a size_t holds");
    }
    return offset;
  }

  void release(std::size_t offset, std::size_t bytes) {
    bytes = aligned_size(std::max<std::size_t>(bytes, 1));
    auto it = free_.emplace(offset, bytes).first;
    auto next = std::next(it);
    if (next != free_.end() && it->first + it->second == next->first) {
      it->second += next->second;
      free_.erase(next);
    }
    if (it != free_.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second == it->first) {
        prev->second += it->second;
        free_.erase(it);
      }
    }
  }

  std::size_t size() const { return end_; }

 private:
  std::map<std::size_t, std::size_t> free_;  // offset -> size
  std::size_t end_ = 0;
};

// Marks an executor as running for the scope of one run() (Note [One run at a time]).
class RunningGuard {
 public:
  RunningGuard(std::atomic<bool>& running, const char* who) : running_(running) {
    bool expected = false;
    if (!running_.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      throw Error(std::string("Executor::") + who +
                  ": this executor is running on another thread; an Executor runs one call at "
                  "a time (give each thread its own Executor)");
    }
  }
  ~RunningGuard() { running_.store(false, std::memory_order_release); }
  RunningGuard(const RunningGuard&) = delete;
  RunningGuard& operator=(const RunningGuard&) = delete;

 private:
  std::atomic<bool>& running_;
};

// Node ids are ints (graph/graph.hpp) and the plan's tables by node are vectors: these two
// helpers are where an id or a node count becomes an index.
std::size_t node_count(const Graph& g) {
  return static_cast<std::size_t>(g.size());
}
template <typename Table>
decltype(auto) at(Table& table, int id) {
  return table[static_cast<std::size_t>(id)];
}

// Bytes of an op node's value.
std::size_t value_bytes(const Node& node) {
  return static_cast<std::size_t>(node.shape.numel()) * dtype_size(node.dtype);
}

std::vector<Value> flatten(std::initializer_list<ValueList> lists) {
  std::vector<Value> out;
  for (const ValueList& l : lists) out.insert(out.end(), l.values().begin(), l.values().end());
  return out;
}

}  // namespace

Executor::Executor(Graph& graph, std::initializer_list<ValueList> outputs, ExecutorOptions options)
    : Executor(graph, std::span<const Value>(flatten(outputs)), options) {}

Executor::Executor(Graph& graph, std::span<const Value> outputs, ExecutorOptions options)
    : graph_(graph), outputs_(outputs.begin(), outputs.end()), options_(options) {
  detail::init_isa();  // a bad TBGRAD_MAX_ISA is reported here, before any kernel runs
  for (const Value& v : outputs_) {
    if (!v.valid() || &v.graph() != &graph_) {
      throw Error("Executor: output " + v.describe() + " is not a value of this graph");
    }
  }
  plan();
}

// The tables the phases of plan() hand on. Steps are indexed by position (std::size_t), nodes
// by id through at().
struct Executor::BufferPlan {
  // By step (list_steps): the op node it runs, the node whose buffer it writes (its own, or the
  // fused consumer's), and the nodes it reads (a fused consumer's mask among them).
  std::vector<int> op_node, out_node;
  std::vector<std::vector<int>> reads;
  // By node (find_last_uses): the step after which its buffer is free; kForever for outputs.
  std::vector<std::size_t> last_use;
  // assign_offsets: by node, its buffer's offset in the arena; by step, its workspace's offset
  // and size (0: none).
  std::vector<std::size_t> out_offset, ws_offset, ws_size;

  static constexpr std::size_t kForever = std::numeric_limits<std::size_t>::max();
};

// Note [Buffer plan], phase by phase: the nodes the outputs need, the consumers run as their
// producers' epilogues (a fused pair is one step, writing the consumer's buffer), the step
// list, the step after which each buffer is free, offsets in the arena, and the steps run()
// executes.
void Executor::plan() {
  mark_needed();
  const Fusions fusions = fuse_epilogues();
  BufferPlan bp = list_steps(fusions);
  find_last_uses(bp);
  assign_offsets(bp);
  make_steps(bp, fusions);
}

// The nodes the outputs need: each node reads only earlier ones, so one backward sweep finds
// them all.
void Executor::mark_needed() {
  needed_.assign(node_count(graph_), 0);
  for (const Value& v : outputs_) at(needed_, v.id()) = 1;
  for (int id = graph_.size() - 1; id >= 0; --id) {
    if (!at(needed_, id)) continue;
    for (int in : graph_.node(id).inputs) at(needed_, in) = 1;
  }
}

// The steps, in creation order: every needed op node but those run as another's epilogue.
Executor::BufferPlan Executor::list_steps(const Fusions& fusions) const {
  BufferPlan bp;
  for (int id = 0; id < graph_.size(); ++id) {
    if (!at(needed_, id) || graph_.node(id).kind != NodeKind::kOp || at(fusions.absorbed, id)) {
      continue;
    }
    const Fusion& f = at(fusions.by_producer, id);
    bp.op_node.push_back(id);
    bp.out_node.push_back(f.consumer >= 0 ? f.consumer : id);
    bp.reads.push_back(graph_.node(id).inputs);
    if (f.mask >= 0) bp.reads.back().push_back(f.mask);
  }
  return bp;
}

// The last step that reads each value. A value nobody reads is free right after the step that
// writes it (readers always come later, so a reader's step overrides that); outputs live
// forever.
void Executor::find_last_uses(BufferPlan& bp) const {
  bp.last_use.assign(node_count(graph_), BufferPlan::kForever);
  for (std::size_t s = 0; s < bp.out_node.size(); ++s) at(bp.last_use, bp.out_node[s]) = s;
  for (std::size_t s = 0; s < bp.reads.size(); ++s) {
    for (int in : bp.reads[s]) at(bp.last_use, in) = s;
  }
  for (const Value& v : outputs_) at(bp.last_use, v.id()) = BufferPlan::kForever;
}

// Offsets in the arena, step by step: the step's output, then its workspace (live during the
// step only), then the buffers whose last use it was are released for later steps.
void Executor::assign_offsets(BufferPlan& bp) {
  const std::size_t steps = bp.op_node.size();
  OffsetAllocator alloc;
  bp.out_offset.assign(node_count(graph_), 0);
  bp.ws_offset.assign(steps, 0);
  bp.ws_size.assign(steps, 0);
  std::vector<int> release;
  for (std::size_t s = 0; s < steps; ++s) {
    const int id = bp.op_node[s];
    const Node& node = graph_.node(id);
    std::vector<Value> ins;
    for (int in : node.inputs) ins.emplace_back(&graph_, in);
    const std::size_t out_bytes = value_bytes(node);
    const std::size_t ws_bytes = node.op->workspace_bytes(ins, Value(&graph_, id));
    // A fused step writes its consumer's buffer (same shape and dtype); its own has none.
    const int out = bp.out_node[s];
    at(bp.out_offset, out) = alloc.allocate(out_bytes);
    at(bp.out_offset, id) = at(bp.out_offset, out);
    unplanned_bytes_ += aligned_size(std::max<std::size_t>(out_bytes, 1));
    // The workspace is released before the step's other buffers, which is fine: it is only live
    // during its own step and is allocated after the output, so they never overlap.
    if (ws_bytes) {
      bp.ws_offset[s] = alloc.allocate(ws_bytes);
      bp.ws_size[s] = ws_bytes;
      unplanned_bytes_ += aligned_size(ws_bytes);
      alloc.release(bp.ws_offset[s], ws_bytes);
    }
    // Release after the step: a step's inputs and output are live together. In node order, each
    // once: the order decides which free blocks merge, hence the later offsets.
    release.clear();
    for (int in : bp.reads[s]) {
      if (graph_.node(in).kind == NodeKind::kOp && at(bp.last_use, in) == s) release.push_back(in);
    }
    if (at(bp.last_use, out) == s) release.push_back(out);
    std::sort(release.begin(), release.end());
    release.erase(std::unique(release.begin(), release.end()), release.end());
    for (int r : release) alloc.release(at(bp.out_offset, r), value_bytes(graph_.node(r)));
  }
  arena_bytes_ = alloc.size();
}

// The arena, a tensor for every needed node (op values are views into the arena), and the
// steps run() executes, with where bind() must put each input.
void Executor::make_steps(const BufferPlan& bp, const Fusions& fusions) {
  arena_ = allocate_aligned(arena_bytes_);
  auto* base = static_cast<std::byte*>(arena_.get());
  values_.assign(node_count(graph_), Tensor());
  bound_.assign(node_count(graph_), 0);
  uses_.assign(node_count(graph_), {});
  for (int id = 0; id < graph_.size(); ++id) {
    if (!at(needed_, id)) continue;
    const Node& node = graph_.node(id);
    switch (node.kind) {
      case NodeKind::kParam:
      case NodeKind::kConstant:
        at(values_, id) = node.value;
        break;
      case NodeKind::kInput:
      case NodeKind::kLabels:
        break;  // set by bind()
      case NodeKind::kOp:
        at(values_, id) = Tensor::view(node.shape, node.dtype, base + at(bp.out_offset, id));
        break;
    }
  }
  steps_.reserve(bp.op_node.size());
  for (std::size_t s = 0; s < bp.op_node.size(); ++s) {
    const int id = bp.op_node[s];
    const Node& node = graph_.node(id);
    Step step;
    step.op = node.op.get();
    step.node = id;
    step.output = at(values_, id);
    step.workspace = bp.ws_size[s] ? base + bp.ws_offset[s] : nullptr;
    const Fusion& f = at(fusions.by_producer, id);
    if (f.consumer >= 0) {
      step.fused = f.consumer;
      step.epilogue_kind = f.kind;
      if (f.mask >= 0) step.epilogue_mask = at(values_, f.mask);
    }
    for (std::size_t slot = 0; slot < node.inputs.size(); ++slot) {
      const int in = node.inputs[slot];
      step.inputs.push_back(at(values_, in));
      const NodeKind k = graph_.node(in).kind;
      if (k == NodeKind::kInput || k == NodeKind::kLabels) at(uses_, in).push_back({s, slot});
    }
    steps_.push_back(std::move(step));
  }
}

// Note [Epilogues] (graph/op.hpp): finds the consumers that run inside their producer's kernel.
// Consumer E (an op whose epilogue_kind is not kNone) fuses into producer P, its input 0 (kRelu)
// or 1 (kReluMask), when P is an op node that E alone reads, P is not an output (its values are
// never written), P accepts the kind, P is not itself fused either way, and (kReluMask) the
// mask, E's input 0, is an op's, parameter's or constant's value computed before P (not an
// input, which bind() could change after planning). E's step then disappears: P writes E's
// buffer and applies the epilogue.
Executor::Fusions Executor::fuse_epilogues() const {
  const std::size_t n = node_count(graph_);
  Fusions f{std::vector<Fusion>(n), std::vector<char>(n, 0)};
  if (!options_.fuse) return f;
  std::vector<int> readers(n, 0);
  std::vector<char> is_output(n, 0);
  for (const Value& v : outputs_) at(is_output, v.id()) = 1;
  for (int id = 0; id < graph_.size(); ++id) {
    if (!at(needed_, id)) continue;
    for (int in : graph_.node(id).inputs) ++at(readers, in);
  }
  for (int e = 0; e < graph_.size(); ++e) {
    const Node& en = graph_.node(e);
    if (!at(needed_, e) || en.kind != NodeKind::kOp) continue;
    const Epilogue::Kind kind = en.op->epilogue_kind();
    if (kind == Epilogue::Kind::kNone) continue;
    const std::size_t slot = kind == Epilogue::Kind::kReluMask ? 1 : 0;
    if (en.inputs.size() <= slot) continue;
    const int p = en.inputs[slot];
    const Node& pn = graph_.node(p);
    if (pn.kind != NodeKind::kOp || at(is_output, p) || at(readers, p) != 1 || at(f.absorbed, p) ||
        at(f.by_producer, p).consumer >= 0 || !pn.op->accepts_epilogue(kind) ||
        !(pn.shape == en.shape) || pn.dtype != en.dtype) {
      continue;
    }
    int mask = -1;
    if (kind == Epilogue::Kind::kReluMask) {
      mask = en.inputs[0];
      const NodeKind mk = graph_.node(mask).kind;
      if (mask >= p || mk == NodeKind::kInput || mk == NodeKind::kLabels) continue;
    }
    at(f.by_producer, p) = Fusion{e, mask, kind};
    at(f.absorbed, e) = 1;
  }
  return f;
}

Executor& Executor::bind(Value input, const Tensor& t) {
  if (!input.valid() || &input.graph() != &graph_) {
    throw Error("Executor::bind: " + input.describe() + " is not a value of this graph");
  }
  const Node& node = graph_.node(input.id());
  if (node.kind != NodeKind::kInput && node.kind != NodeKind::kLabels) {
    throw Error("Executor::bind: " + input.describe() + " is not an input");
  }
  if (!(t.shape() == node.shape) || t.dtype() != node.dtype) {
    throw ShapeError("Executor::bind: input " + node.name + " expects " + node.shape.str() + " " +
                     dtype_name(node.dtype) + ", got " + t.shape().str() + " " +
                     dtype_name(t.dtype()));
  }
  RunningGuard guard(running_, "bind");
  if (!t.defined()) {
    throw Error("Executor::bind: input " + node.name + ": the tensor has no data (a "
                "default-constructed Tensor)");
  }
  const auto id = static_cast<std::size_t>(input.id());
  if (id >= needed_.size()) return *this;  // created after this executor: not read by it
  values_[id] = t;
  bound_[id] = 1;
  for (const InputUse& use : uses_[id]) steps_[use.step].inputs[use.slot] = t;
  return *this;
}

void Executor::run() {
  RunningGuard guard(running_, "run");
  for (const Value& in : graph_.inputs()) {
    const auto id = static_cast<std::size_t>(in.id());
    if (id < needed_.size() && needed_[id] && !bound_[id]) {
      throw Error("Executor::run: input " + in.describe() + " is not bound");
    }
  }
  auto body = [this] { run_steps(); };
  run_in_arena(body);
}

void Executor::run_steps() {
  if (profiling_) {
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      const Step& step = steps_[i];
      KernelContext ctx{step.inputs, step.output, step.workspace, step.epilogue(), &run_info_};
      const auto t0 = std::chrono::steady_clock::now();
      step.op->forward(ctx);
      profile_[i].seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++profile_[i].calls;
    }
    return;
  }
  for (const Step& step : steps_) {
    KernelContext ctx{step.inputs, step.output, step.workspace, step.epilogue(), &run_info_};
    step.op->forward(ctx);
  }
}

void Executor::set_profiling(bool on) {
  profiling_ = on;
  profile_.clear();
  if (!on) return;
  for (const Step& step : steps_) {
    const char* fused = step.fused >= 0 ? graph_.node(step.fused).op->name() : nullptr;
    profile_.push_back({step.op->name(), step.node, step.output.shape(), 0.0, 0, fused,
                        step.fused});
  }
}

const Tensor& Executor::get(Value v) const {
  if (!v.valid() || &v.graph() != &graph_) {
    throw Error("Executor::get: " + v.describe() + " is not a value of this graph");
  }
  const auto id = static_cast<std::size_t>(v.id());
  const bool is_output = std::find(outputs_.begin(), outputs_.end(), v) != outputs_.end();
  const bool is_leaf = id < needed_.size() && graph_.node(v.id()).kind != NodeKind::kOp;
  if (!is_output && !(is_leaf && needed_[id])) {
    throw Error("Executor::get: " + v.describe() + " is not an output of this executor");
  }
  if (is_leaf && !bound_[id] && !values_[id].defined()) {
    // An input's value is the tensor bound to it: a view taken before bind() would stay empty.
    throw Error("Executor::get: input " + v.describe() + " is not bound yet (bind() it first)");
  }
  return values_[id];
}

}  // namespace tbgrad
