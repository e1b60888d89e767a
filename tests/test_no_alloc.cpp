// A training step in steady state performs no heap allocation. This binary replaces the global
// operator new to count allocations, so it holds only this test.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <tbgrad.hpp>
#include <vector>

#include "tests/custom_cnn.hpp"

namespace {
std::atomic<long> g_allocations{0};
}

// GCC sees our operator delete inlined next to our operator new and, not knowing they are a
// pair, warns that free() is called on memory from "operator new".
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return operator new(n, a);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}

namespace tbgrad {
namespace {

TEST(NoAllocation, CountingNewSeesAllocations) {
  const long before = g_allocations.load();
  std::vector<int> v(100);  // a library allocation the compiler cannot elide
  v[7] = 1;
  EXPECT_GT(g_allocations.load(), before);  // the counter works, so zero below means zero
}

class SteadyState : public ::testing::TestWithParam<const char*> {};

TEST_P(SteadyState, TrainingStepAllocatesNothing) {
  ThreadScope threads(2);
  const std::int64_t batch = 32;
  Graph g;
  nn::ParamStore store;
  nn::Network net = nn::build_network(GetParam(), g, batch, store);  // the plain graph, no Trainer
  nn::Rng rng(1);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  auto grads = grad(net.loss, net.params);
  Executor ex(g, {net.loss, grads});
  std::vector<Tensor> params(store.tensors().begin(), store.tensors().end());
  nn::Adam opt(params, 1e-3);
  Tensor images({batch, 1, 28, 28}, DType::kF32);
  Tensor labels({batch}, DType::kI32);
  nn::uniform(images, 0, 1, rng);
  for (std::int64_t i = 0; i < batch; ++i) labels.set(i, static_cast<double>(i % 10));
  std::vector<Tensor> grad_values;
  for (Value gv : grads) grad_values.push_back(ex[gv]);  // views stay valid across runs

  auto step = [&] {
    ex.bind(net.images, images).bind(net.labels, labels).run();
    opt.step(grad_values);
  };
  for (int i = 0; i < 3; ++i) step();  // warm-up: TBB starts its threads
  const long before = g_allocations.load();
  for (int i = 0; i < 20; ++i) step();
  EXPECT_EQ(g_allocations.load() - before, 0) << "heap allocations in 20 training steps";
}

// The library's data-parallel step (micro-batches, replicas, batch-level contractions) and its
// epoch loop, for a user's network and a built-in one: after a warm-up epoch (which builds the
// short last batch's graphs), a whole epoch allocates nothing.
using testing::custom_cnn;  // tests/custom_cnn.hpp

TEST(LibrarySteadyState, TrainingEpochAllocatesNothing) {
  for (const std::string name : {"custom", "seed"}) {
    ThreadScope threads(2);
    const nn::ModelFn model = name == "custom" ? nn::ModelFn(custom_cnn) : nn::model_fn(name);
    data::Dataset d;
    d.count = 100;
    d.rows = d.cols = 28;
    nn::Rng rng(1);
    for (std::int64_t i = 0; i < d.count * 784; ++i)
      d.images.push_back(static_cast<std::uint8_t>(rng.below(256)));
    for (std::int64_t i = 0; i < d.count; ++i)
      d.labels.push_back(static_cast<std::uint8_t>(i % 10));
    nn::ParamStore store;
    nn::create_parameters(model, store);
    nn::initialize(store, nn::Init::kXavierUniform, rng);
    nn::Adam opt(store.tensors(), 1e-3);
    nn::Trainer trainer(model, store, opt, {.batch_size = 32});
    ASSERT_FALSE(trainer.batch_contracted().empty());
    data::Batcher batches(d, 32);            // 32, 32, 32, 4
    nn::train_epoch(trainer, batches, rng);  // warm-up
    const long before = g_allocations.load();
    nn::train_epoch(trainer, batches, rng);
    EXPECT_EQ(g_allocations.load() - before, 0) << "heap allocations in one epoch of " << name;
  }
}

// AdamW with weight decay on the weights only, clipping by the global norm and a schedule
// applied every step: still nothing allocated in an epoch.
TEST(LibrarySteadyState, ClippingWeightDecayAndScheduleAllocateNothing) {
  ThreadScope threads(2);
  const nn::ModelFn model = custom_cnn;
  data::Dataset d;
  d.count = 100;
  d.rows = d.cols = 28;
  nn::Rng rng(1);
  for (std::int64_t i = 0; i < d.count * 784; ++i)
    d.images.push_back(static_cast<std::uint8_t>(rng.below(256)));
  for (std::int64_t i = 0; i < d.count; ++i) d.labels.push_back(static_cast<std::uint8_t>(i % 10));
  nn::ParamStore store;
  nn::create_parameters(model, store);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  nn::AdamW opt(store.tensors(), 1e-3, {.decay = nn::decay_mask(store)});
  opt.set_max_grad_norm(0.5);
  nn::CosineSchedule schedule(1e-3, {.warmup = 2, .total = 8});
  nn::Trainer trainer(model, store, opt, {.batch_size = 32});
  data::Batcher batches(d, 32);
  nn::EpochOptions eo;
  eo.before_step = [&](std::int64_t, std::int64_t) { schedule.apply(opt); };
  eo.after_update = [&](std::int64_t) { schedule.step(); };
  nn::train_epoch(trainer, batches, rng, eo);  // warm-up
  const long before = g_allocations.load();
  nn::train_epoch(trainer, batches, rng, eo);
  EXPECT_EQ(g_allocations.load() - before, 0) << "heap allocations in one epoch";
  EXPECT_GT(opt.last_grad_norm(), 0.0);
}

// Image data with channels, per-channel normalisation and augmentation (random crop, flip): the
// batcher's fill and the trainer's epoch allocate nothing once built.
TEST(LibrarySteadyState, AugmentedImageBatchesAllocateNothing) {
  ThreadScope threads(2);
  data::Dataset d;
  d.count = 50;
  d.channels = 3;
  d.rows = d.cols = 8;
  d.mean = {0.5f, 0.4f, 0.3f};
  d.stddev = {0.2f, 0.25f, 0.3f};
  nn::Rng rng(1);
  for (std::int64_t i = 0; i < d.count * d.example_size(); ++i)
    d.images.push_back(static_cast<std::uint8_t>(rng.below(256)));
  for (std::int64_t i = 0; i < d.count; ++i) d.labels.push_back(static_cast<std::uint8_t>(i % 4));
  const data::Augment augment{.pad = 2, .flip = true, .seed = 7};
  const nn::ModelFn model = [](Graph& g, nn::ParamStore& p, std::int64_t b) {
    nn::ModelGraph m;
    m.inputs = g.input("images", {b, 3, 8, 8});
    m.labels = g.input_labels("labels", {b});
    m.outputs = linear(flatten(m.inputs), p.param(g, "fc.w", {4, 192}), p.param(g, "fc.b", {4}));
    m.loss = softmax_cross_entropy(m.outputs, m.labels);
    return m;
  };
  nn::ParamStore store;
  nn::create_parameters(model, store);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  nn::SGD sgd(store.tensors(), 0.01);
  nn::Trainer trainer(model, store, sgd, {.batch_size = 16, .micro_batch = 4, .augment = augment});
  data::Batcher filled(d, 16, 0, augment);
  data::Batcher batches(d, 16);                                // 16, 16, 16, 2
  nn::train_epoch(trainer, batches, rng, {.epoch = 1});        // warm-up
  const long before = g_allocations.load();
  for (std::int64_t b = 0; b < filled.num_batches(); ++b) {
    filled.set_epoch(static_cast<std::uint64_t>(b));
    filled.fill(b);
  }
  nn::train_epoch(trainer, batches, rng, {.epoch = 2});
  EXPECT_EQ(g_allocations.load() - before, 0) << "heap allocations in augmented batches";
}

INSTANTIATE_TEST_SUITE_P(Models, SteadyState, ::testing::Values("seed", "seed-nopool", "lenet5"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

}  // namespace
}  // namespace tbgrad
