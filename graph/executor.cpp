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

void Executor::plan() {
  const int n = graph_.size();
  needed_.assign(static_cast<std::size_t>(n), 0);
  bound_.assign(static_cast<std::size_t>(n), 0);
  values_.assign(static_cast<std::size_t>(n), Tensor());
  uses_.assign(static_cast<std::size_t>(n), {});

  for (const Value& v : outputs_) needed_[static_cast<std::size_t>(v.id())] = 1;
  for (int id = n - 1; id >= 0; --id) {
    if (!needed_[static_cast<std::size_t>(id)]) continue;
    for (int in : graph_.node(id).inputs) needed_[static_cast<std::size_t>(in)] = 1;
  }
  const Fusions fusions = fuse_epilogues();
  const std::vector<Fusion>& fused = fusions.by_producer;

  // The steps: every needed op node but those run as another's epilogue. Step s writes the
  // buffer of out_node[s] (its node's, or the fused consumer's) and reads reads[s].
  std::vector<int> op_ids, out_node;
  std::vector<std::vector<int>> reads;
  for (int id = 0; id < n; ++id) {
    const auto i = static_cast<std::size_t>(id);
    if (!needed_[i] || graph_.node(id).kind != NodeKind::kOp || fusions.absorbed[i]) continue;
    op_ids.push_back(id);
    out_node.push_back(fused[i].consumer >= 0 ? fused[i].consumer : id);
    reads.push_back(graph_.node(id).inputs);
    if (fused[i].mask >= 0) reads.back().push_back(fused[i].mask);
  }
  // Last step that reads each node; outputs live forever.
  constexpr int kForever = std::numeric_limits<int>::max();
  std::vector<int> last_use(static_cast<std::size_t>(n), -1);
  for (int s = 0; s < static_cast<int>(op_ids.size()); ++s) {
    for (int in : reads[static_cast<std::size_t>(s)]) last_use[static_cast<std::size_t>(in)] = s;
  }
  for (const Value& v : outputs_) last_use[static_cast<std::size_t>(v.id())] = kForever;

  // Assign offsets.
  OffsetAllocator alloc;
  std::vector<std::size_t> out_offset(static_cast<std::size_t>(n), 0);
  std::vector<std::size_t> ws_offset(op_ids.size(), 0), ws_size(op_ids.size(), 0);
  std::vector<std::vector<int>> release_after(op_ids.size());
  for (int s = 0; s < static_cast<int>(op_ids.size()); ++s) {
    const int id = op_ids[static_cast<std::size_t>(s)];
    const Node& node = graph_.node(id);
    std::vector<Value> ins;
    for (int in : node.inputs) ins.emplace_back(&graph_, in);
    const std::size_t out_bytes =
        static_cast<std::size_t>(node.shape.numel()) * dtype_size(node.dtype);
    const std::size_t ws_bytes = node.op->workspace_bytes(ins, Value(&graph_, id));
    // A fused step writes its consumer's buffer (same shape and dtype); its own has none.
    const int out = out_node[static_cast<std::size_t>(s)];
    out_offset[static_cast<std::size_t>(out)] = alloc.allocate(out_bytes);
    out_offset[static_cast<std::size_t>(id)] = out_offset[static_cast<std::size_t>(out)];
    unplanned_bytes_ += aligned_size(std::max<std::size_t>(out_bytes, 1));
    if (ws_bytes) {
      ws_offset[static_cast<std::size_t>(s)] = alloc.allocate(ws_bytes);
      ws_size[static_cast<std::size_t>(s)] = ws_bytes;
      unplanned_bytes_ += aligned_size(ws_bytes);
      alloc.release(ws_offset[static_cast<std::size_t>(s)], ws_bytes);
    }
    // A value nobody reads (and that is not an output) is released right away.
    if (last_use[static_cast<std::size_t>(out)] < 0) last_use[static_cast<std::size_t>(out)] = s;
    for (int in : reads[static_cast<std::size_t>(s)]) {
      if (graph_.node(in).kind == NodeKind::kOp && last_use[static_cast<std::size_t>(in)] == s) {
        release_after[static_cast<std::size_t>(s)].push_back(in);
      }
    }
    if (last_use[static_cast<std::size_t>(out)] == s) {
      release_after[static_cast<std::size_t>(s)].push_back(out);
    }
    // Release after the step: a step's inputs and output are live together.
    std::sort(release_after[static_cast<std::size_t>(s)].begin(),
              release_after[static_cast<std::size_t>(s)].end());
    release_after[static_cast<std::size_t>(s)].erase(
        std::unique(release_after[static_cast<std::size_t>(s)].begin(),
                    release_after[static_cast<std::size_t>(s)].end()),
        release_after[static_cast<std::size_t>(s)].end());
    for (int r : release_after[static_cast<std::size_t>(s)]) {
      const Node& rn = graph_.node(r);
      alloc.release(out_offset[static_cast<std::size_t>(r)],
                    static_cast<std::size_t>(rn.shape.numel()) * dtype_size(rn.dtype));
    }
  }
  // Note: the workspace is released before the step's other buffers in the plan above, which is
  // fine because the workspace is only live during its own step and is allocated after the
  // output, so they never overlap.

  arena_bytes_ = alloc.size();
  arena_ = allocate_aligned(arena_bytes_);
  auto* base = static_cast<std::byte*>(arena_.get());

  // Tensors for every needed node.
  for (int id = 0; id < n; ++id) {
    if (!needed_[static_cast<std::size_t>(id)]) continue;
    const Node& node = graph_.node(id);
    switch (node.kind) {
      case NodeKind::kParam:
      case NodeKind::kConstant:
        values_[static_cast<std::size_t>(id)] = node.value;
        break;
      case NodeKind::kInput:
      case NodeKind::kLabels:
        break;  // set by bind()
      case NodeKind::kOp:
        values_[static_cast<std::size_t>(id)] =
            Tensor::view(node.shape, node.dtype, base + out_offset[static_cast<std::size_t>(id)]);
        break;
    }
  }
  steps_.reserve(op_ids.size());
  for (int s = 0; s < static_cast<int>(op_ids.size()); ++s) {
    const int id = op_ids[static_cast<std::size_t>(s)];
    const Node& node = graph_.node(id);
    Step step;
    step.op = node.op.get();
    step.node = id;
    step.output = values_[static_cast<std::size_t>(id)];
    step.workspace =
        ws_size[static_cast<std::size_t>(s)] ? base + ws_offset[static_cast<std::size_t>(s)] : nullptr;
    const Fusion& f = fused[static_cast<std::size_t>(id)];
    if (f.consumer >= 0) {
      step.fused = f.consumer;
      step.epilogue_kind = f.kind;
      if (f.mask >= 0) step.epilogue_mask = values_[static_cast<std::size_t>(f.mask)];
    }
    for (int slot = 0; slot < static_cast<int>(node.inputs.size()); ++slot) {
      const int in = node.inputs[static_cast<std::size_t>(slot)];
      step.inputs.push_back(values_[static_cast<std::size_t>(in)]);
      const NodeKind k = graph_.node(in).kind;
      if (k == NodeKind::kInput || k == NodeKind::kLabels) {
        uses_[static_cast<std::size_t>(in)].push_back({s, slot});
      }
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
  const int n = graph_.size();
  Fusions f{std::vector<Fusion>(static_cast<std::size_t>(n)),
            std::vector<char>(static_cast<std::size_t>(n), 0)};
  if (!options_.fuse) return f;
  std::vector<int> readers(static_cast<std::size_t>(n), 0);
  std::vector<char> is_output(static_cast<std::size_t>(n), 0);
  for (const Value& v : outputs_) is_output[static_cast<std::size_t>(v.id())] = 1;
  for (int id = 0; id < n; ++id) {
    if (!needed_[static_cast<std::size_t>(id)]) continue;
    for (int in : graph_.node(id).inputs) ++readers[static_cast<std::size_t>(in)];
  }
  for (int e = 0; e < n; ++e) {
    const Node& en = graph_.node(e);
    if (!needed_[static_cast<std::size_t>(e)] || en.kind != NodeKind::kOp) continue;
    const Epilogue::Kind kind = en.op->epilogue_kind();
    if (kind == Epilogue::Kind::kNone) continue;
    const std::size_t slot = kind == Epilogue::Kind::kReluMask ? 1 : 0;
    if (en.inputs.size() <= slot) continue;
    const int p = en.inputs[slot];
    const auto pi = static_cast<std::size_t>(p);
    const Node& pn = graph_.node(p);
    if (pn.kind != NodeKind::kOp || is_output[pi] || readers[pi] != 1 || f.absorbed[pi] ||
        f.by_producer[pi].consumer >= 0 || !pn.op->accepts_epilogue(kind) ||
        !(pn.shape == en.shape) || pn.dtype != en.dtype) {
      continue;
    }
    int mask = -1;
    if (kind == Epilogue::Kind::kReluMask) {
      mask = en.inputs[0];
      const NodeKind mk = graph_.node(mask).kind;
      if (mask >= p || mk == NodeKind::kInput || mk == NodeKind::kLabels) continue;
    }
    f.by_producer[pi] = Fusion{e, mask, kind};
    f.absorbed[static_cast<std::size_t>(e)] = 1;
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
  for (const InputUse& use : uses_[id]) {
    steps_[static_cast<std::size_t>(use.step)].inputs[static_cast<std::size_t>(use.slot)] = t;
  }
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
      KernelContext ctx{step.inputs, step.output, step.workspace, step.epilogue()};
      const auto t0 = std::chrono::steady_clock::now();
      step.op->forward(ctx);
      profile_[i].seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++profile_[i].calls;
    }
    return;
  }
  for (const Step& step : steps_) {
    KernelContext ctx{step.inputs, step.output, step.workspace, step.epilogue()};
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
