#include "apps/mnist/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <tbgrad.hpp>

#include "nn/checkpoint.hpp"

namespace tbgrad::mnist {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t kPixels = std::int64_t{28} * 28;
constexpr std::int64_t kEvalBatch = 1000;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One graph and executor for one batch size; several share a ParamStore.
struct Runner {
  Graph g;
  nn::Network net;
  Value probabilities;  // softmax(logits), for prediction
  std::vector<Value> grads;
  std::vector<Tensor> grad_values;  // views into the executor, stable across runs
  std::unique_ptr<Executor> ex;
  Tensor images, labels;
  std::int64_t batch;

  enum class Mode { kTrain, kEval, kPredict, kInspect };

  Runner(const std::string& model, std::int64_t b, nn::ParamStore& store, Mode mode)
      : net(nn::build_network(model, g, b, store)),
        images(Shape{b, 1, 28, 28}, DType::kF32),
        labels(Shape{b}, DType::kI32),
        batch(b) {
    switch (mode) {
      case Mode::kTrain:
        grads = grad(net.loss, net.params);
        ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{net.loss, net.logits, grads});
        for (Value gv : grads) grad_values.push_back((*ex)[gv]);
        break;
      case Mode::kEval:
        ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{net.loss, net.logits});
        break;
      case Mode::kPredict:
        probabilities = softmax(net.logits);
        ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{probabilities});
        break;
      case Mode::kInspect: {
        probabilities = softmax(net.logits);
        std::vector<Value> layers;
        for (const auto& layer : net.layers) layers.push_back(layer.value);
        ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{probabilities, layers});
        break;
      }
    }
    ex->bind(net.images, images).bind(net.labels, labels);
  }

  // Copies examples order[0..batch) of `data` in, as floats in [0, 1].
  void load(const Dataset& data, const std::int64_t* order) {
    float* img = images.data<float>();
    std::int32_t* lab = labels.data<std::int32_t>();
    constexpr float kScale = 1.0f / 255.0f;
    for (std::int64_t i = 0; i < batch; ++i) {
      const std::int64_t k = order[i];
      const std::uint8_t* src = data.images.data() + k * kPixels;
      float* dst = img + i * kPixels;
      for (std::int64_t j = 0; j < kPixels; ++j) dst[j] = static_cast<float>(src[j]) * kScale;
      lab[i] = data.labels[static_cast<std::size_t>(k)];
    }
  }

  double loss() const { return (*ex)[net.loss].at(0); }

  // Number of rows whose largest logit is the label; fills `confusion` if given.
  std::int64_t correct(std::array<std::array<std::int64_t, 10>, 10>* confusion) const {
    const float* logits = (*ex)[net.logits].data<float>();
    const std::int32_t* lab = labels.data<std::int32_t>();
    std::int64_t ok = 0;
    for (std::int64_t i = 0; i < batch; ++i) {
      const float* row = logits + i * 10;
      const auto pred = static_cast<int>(std::max_element(row, row + 10) - row);
      ok += pred == lab[i];
      if (confusion) ++(*confusion)[static_cast<std::size_t>(lab[i])][static_cast<std::size_t>(pred)];
    }
    return ok;
  }
};

// Note [Micro-batches]: a training batch is split into micro-batches of kMicroBatch images,
// each with its own graph and executor over the shared parameters. The micro-batches run in
// parallel, one task each (loading its own images, then its kernels inline under SerialScope),
// and their gradients are added in micro-batch order, weighted by their share of the batch,
// which gives the gradient of the batch's mean loss; that sum and the optimizer's update run
// as a second parallel region split by element ranges (TrainStep::update). Two parallel
// regions per step instead of one per op: at batch 32 the ops are too small for their
// fork/join to pay. The split depends only on the batch size, never on
// the thread count, so results stay bit-identical for any number of threads.
//
// Each micro-batch computes a full set of parameter gradients, which are then added up: cheap
// for the reference CNN (32 thousand parameters) but not for seed-nopool (250 thousand, mostly
// FC1), where it measured slower than parallel kernels over the whole batch. So models with
// more than kMaxMicroBatchedParams parameters keep the whole batch in one graph. Batches of at
// most one micro-batch run their kernels inline: they are too small for any fork/join to pay.
constexpr std::int64_t kMicroBatch = 8;
constexpr std::int64_t kMaxMicroBatchedParams = 100000;

std::int64_t micro_batch_size(const std::string& model, std::int64_t batch) {
  nn::ParamStore probe;
  Graph g;
  nn::build_network(model, g, 1, probe);
  return probe.count() <= kMaxMicroBatchedParams ? kMicroBatch : batch;
}

struct TrainStep {
  std::vector<std::unique_ptr<Runner>> parts;
  std::vector<std::int64_t> offsets;  // first image of each micro-batch within the batch
  std::vector<Tensor> grads;  // the batch's gradients, one per parameter, in the store's order
  // The update split into element ranges of the parameters, for update().
  struct Chunk {
    std::size_t param;
    std::int64_t lo, hi;
  };
  std::vector<Chunk> chunks;
  std::int64_t batch;
  double loss = 0;

  TrainStep(const std::string& model, std::int64_t b, nn::ParamStore& store) : batch(b) {
    const std::int64_t micro = micro_batch_size(model, b);
    for (std::int64_t start = 0; start < b; start += micro) {
      parts.push_back(std::make_unique<Runner>(model, std::min(micro, b - start), store,
                                               Runner::Mode::kTrain));
      offsets.push_back(start);
    }
    constexpr std::int64_t kChunk = 4096;
    for (std::size_t i = 0; i < store.tensors().size(); ++i) {
      const Tensor& p = store.tensors()[i];
      grads.emplace_back(p.shape(), p.dtype());
      for (std::int64_t lo = 0; lo < p.numel(); lo += kChunk) {
        chunks.push_back({i, lo, std::min(p.numel(), lo + kChunk)});
      }
    }
  }

  // Loads each micro-batch's images (examples order[0..batch)) and runs its forward and
  // backward pass, each micro-batch on one thread (Note [Micro-batches]); then the loss.
  void run(const Dataset& data, const std::int64_t* order) {
    auto one = [&](std::size_t r) {
      parts[r]->load(data, order + offsets[r]);
      parts[r]->ex->run();
    };
    if (parts.size() == 1 && batch <= kMicroBatch) {
      SerialScope serial;
      one(0);
    } else if (parts.size() == 1) {
      one(0);
    } else {
      auto body = [&] {
        parallel_for_static(static_cast<std::int64_t>(parts.size()),
                            [&](std::int64_t lo, std::int64_t hi) {
                              SerialScope serial;
                              for (std::int64_t r = lo; r < hi; ++r) one(static_cast<std::size_t>(r));
                            });
      };
      run_in_arena(body);
    }
    loss = 0;
    for (const auto& part : parts) {
      loss += part->loss() * static_cast<double>(part->batch) / static_cast<double>(batch);
    }
  }

  // grads[i][lo, hi) = the batch's gradient: the micro-batches' gradients added in micro-batch
  // order, each weighted by its share of the batch (so the gradient of the batch's mean loss).
  void combine(std::size_t i, std::int64_t lo, std::int64_t hi) {
    float* dst = grads[i].data<float>();
    for (std::size_t r = 0; r < parts.size(); ++r) {
      const float w = static_cast<float>(parts[r]->batch) / static_cast<float>(batch);
      const float* src = parts[r]->grad_values[i].data<float>();
      if (r == 0) {
        for (std::int64_t j = lo; j < hi; ++j) dst[j] = w * src[j];
      } else {
        for (std::int64_t j = lo; j < hi; ++j) dst[j] += w * src[j];
      }
    }
  }

  // The whole gradient into grads (for callers that look at it before the update).
  void combine_all() {
    for (std::size_t i = 0; i < grads.size(); ++i) combine(i, 0, grads[i].numel());
  }

  // Combines the gradient and applies the optimizer's step, split into element ranges over the
  // same threads as the micro-batches (parallel_for_static: each thread always gets the same
  // ranges). Each thread then writes only its share of the weights and reads only its share
  // of the other threads' gradients, instead of one thread pulling every gradient to itself
  // and writing every weight that all threads read next step. Element-wise, so bit-identical
  // to combine_all() followed by opt.step(grads), whatever the thread count.
  void update(nn::Optimizer& opt) {
    auto range = [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t c = lo; c < hi; ++c) {
        const Chunk& ch = chunks[static_cast<std::size_t>(c)];
        combine(ch.param, ch.lo, ch.hi);
        opt.step_range(grads, ch.param, ch.lo, ch.hi);
      }
    };
    const auto n = static_cast<std::int64_t>(chunks.size());
    if (batch <= kMicroBatch) {
      range(0, n);
    } else {
      auto body = [&] { parallel_for_static(n, range); };
      run_in_arena(body);
    }
    opt.finish_step();
  }

  std::int64_t correct() const {
    std::int64_t c = 0;
    for (const auto& part : parts) c += part->correct(nullptr);
    return c;
  }
};

EvalResult evaluate_with(const std::string& model, nn::ParamStore& store, const Dataset& data,
                         std::unique_ptr<Runner>& full, std::unique_ptr<Runner>& tail) {
  EvalResult r;
  r.count = data.count;
  if (data.count == 0) return r;
  const std::int64_t b = std::min(kEvalBatch, data.count);
  if (!full) full = std::make_unique<Runner>(model, b, store, Runner::Mode::kEval);
  const std::int64_t rest = data.count % b;
  if (rest && (!tail || tail->batch != rest)) {
    tail = std::make_unique<Runner>(model, rest, store, Runner::Mode::kEval);
  }
  std::vector<std::int64_t> order(static_cast<std::size_t>(data.count));
  std::iota(order.begin(), order.end(), 0);
  double loss_sum = 0;
  std::int64_t correct = 0;
  for (std::int64_t start = 0; start < data.count;) {
    Runner& run = data.count - start >= b ? *full : *tail;
    run.load(data, order.data() + start);
    run.ex->run();
    loss_sum += run.loss() * static_cast<double>(run.batch);
    correct += run.correct(&r.confusion);
    start += run.batch;
  }
  r.loss = loss_sum / static_cast<double>(data.count);
  r.accuracy = static_cast<double>(correct) / static_cast<double>(data.count);
  return r;
}

// --- checkpoints ----------------------------------------------------------------------------

nn::CheckpointTensor to_checkpoint(const std::string& name, const Tensor& t) {
  nn::CheckpointTensor c;
  c.name = name;
  c.dtype = t.dtype() == DType::kF64 ? "F64" : "F32";
  for (std::int64_t d : t.shape().dims()) c.shape.push_back(d);
  c.data.resize(t.nbytes());
  if (t.nbytes()) std::memcpy(c.data.data(), t.raw(), t.nbytes());
  return c;
}

void from_checkpoint(const nn::Checkpoint& ckpt, const std::string& name, const Tensor& dst,
                     const std::filesystem::path& file) {
  const nn::CheckpointTensor* c = ckpt.find(name);
  if (!c) throw ModelError(file.string() + ": checkpoint has no tensor '" + name + "'");
  const Shape shape{std::span<const std::int64_t>(c->shape)};
  if (c->dtype != "F32" || !(shape == dst.shape())) {
    throw ModelError(file.string() + ": tensor '" + name + "' is " + c->dtype + " " +
                     shape.str() + ", the model needs F32 " + dst.shape().str());
  }
  std::memcpy(dst.raw(), c->data.data(), dst.nbytes());
}

std::string metadata(const nn::Checkpoint& ckpt, const std::string& key,
                     const std::filesystem::path& file) {
  auto it = ckpt.metadata.find(key);
  if (it == ckpt.metadata.end()) {
    throw ModelError(file.string() + ": checkpoint metadata lacks '" + key + "'");
  }
  return it->second;
}

std::int64_t metadata_int(const nn::Checkpoint& ckpt, const std::string& key,
                          const std::filesystem::path& file) {
  const std::string s = metadata(ckpt, key, file);
  try {
    std::size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used != s.size() || v < 0) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw ModelError(file.string() + ": checkpoint metadata '" + key + "' = '" + s +
                     "' is not a non-negative integer");
  }
}

double metadata_positive_double(const nn::Checkpoint& ckpt, const std::string& key,
                                const std::filesystem::path& file) {
  const std::string s = metadata(ckpt, key, file);
  char* end = nullptr;
  const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || v <= 0) {
    throw ModelError(file.string() + ": checkpoint metadata '" + key + "' = '" + s +
                     "' is not a positive finite number");
  }
  return v;
}

std::string model_of(const nn::Checkpoint& ckpt, const std::filesystem::path& file) {
  std::string model = metadata(ckpt, "model", file);
  const auto& names = nn::model_names();
  if (std::find(names.begin(), names.end(), model) == names.end()) {
    throw ModelError(file.string() + ": checkpoint is of unknown model '" + model + "'");
  }
  return model;
}

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// --- progress -------------------------------------------------------------------------------

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  void update(std::int64_t done, std::int64_t total, double loss, double elapsed) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total - done) / rate : 0.0;
    constexpr int kWidth = 30;
    const int fill = static_cast<int>(frac * kWidth);
    std::printf("\r  [%.*s%*s] %3.0f%%  loss %.4f  %6.0f img/s  %4.1fs left ", fill,
                "==============================", kWidth - fill, "", frac * 100, loss, rate, eta);
    std::fflush(stdout);
  }
  void clear() {
    if (!enabled_) return;
    std::printf("\r%*s\r", 90, "");
    std::fflush(stdout);
  }

 private:
  bool enabled_;
  Clock::time_point last_{};
};

}  // namespace

double scheduled_lr(const std::string& schedule, double lr, std::int64_t epoch,
                    std::int64_t epochs) {
  if (schedule == "constant") return lr;
  if (schedule == "cosine") {
    constexpr double kPi = 3.14159265358979323846;
    const double progress = static_cast<double>(epoch - 1) / static_cast<double>(std::max<std::int64_t>(epochs, 1));
    return lr * 0.5 * (1.0 + std::cos(kPi * progress));
  }
  throw Error("unknown learning-rate schedule '" + schedule + "' (expected cosine or constant)");
}

Defaults default_hyperparameters(const std::string& model, const std::string& optimizer) {
  // Measured on real MNIST with the cosine schedule, batch 32, seed 1 (docs/results.md): the
  // best of sgd 0.1, momentum 0.02 and adam 0.001/0.002 for each model.
  std::string opt = optimizer;
  if (opt.empty()) opt = model == "seed-nopool" ? "momentum" : "adam";
  double lr = 0;
  if (opt == "sgd") {
    lr = 0.1;
  } else if (opt == "momentum") {
    lr = 0.02;
  } else if (opt == "adam") {
    lr = model == "seed" ? 2e-3 : 1e-3;
  } else {
    throw Error("unknown optimizer '" + opt + "' (expected sgd, momentum or adam)");
  }
  return {opt, lr};
}

TrainResult train(const TrainConfig& config, const Dataset& train_set, const Dataset& test_set,
                  const std::function<void(const EpochStats&)>& on_epoch) {
  TrainResult result;
  std::string model = config.model;
  std::string optimizer = config.optimizer;
  double lr = config.lr;
  std::int64_t batch = config.batch_size;
  std::int64_t start_epoch = 0;
  nn::Rng rng(config.seed);

  // Resume: the checkpoint decides the model and optimizer; its state replaces a fresh one.
  std::optional<nn::Checkpoint> resumed;
  if (!config.resume.empty()) {
    resumed = nn::load_checkpoint(config.resume);
    const std::string m = model_of(*resumed, config.resume);
    if (m != model) {
      throw ModelError(config.resume.string() + ": checkpoint holds model '" + m +
                       "', not '" + model + "' (pass --model " + m + ")");
    }
    const std::string o = metadata(*resumed, "optimizer", config.resume);
    if (!optimizer.empty() && optimizer != o) {
      throw ModelError(config.resume.string() + ": checkpoint was trained with optimizer '" + o +
                       "', not '" + optimizer + "'");
    }
    if (o != "sgd" && o != "momentum" && o != "adam") {
      throw ModelError(config.resume.string() + ": checkpoint names an unknown optimizer '" + o +
                       "' (expected sgd, momentum or adam)");
    }
    optimizer = o;
    if (lr == 0) lr = metadata_positive_double(*resumed, "lr", config.resume);
    start_epoch = metadata_int(*resumed, "epoch", config.resume);
  }
  const Defaults defaults = default_hyperparameters(model, optimizer);
  optimizer = defaults.optimizer;
  if (lr == 0) lr = defaults.lr;
  result.optimizer = optimizer;
  result.lr = lr;
  result.batch_size = batch;

  const std::int64_t n = config.limit > 0 ? std::min(config.limit, train_set.count) : train_set.count;
  if (n == 0) throw DataError("the training set is empty");
  batch = std::min(batch, n);
  result.batch_size = batch;

  nn::ParamStore store;
  auto full = std::make_unique<TrainStep>(model, batch, store);
  nn::initialize(store, nn::parse_init(config.init), rng);
  std::unique_ptr<TrainStep> tail;
  if (n % batch) tail = std::make_unique<TrainStep>(model, n % batch, store);
  auto opt = nn::make_optimizer(optimizer, store.tensors(), lr);

  if (resumed) {
    for (std::size_t i = 0; i < store.names().size(); ++i) {
      from_checkpoint(*resumed, store.names()[i], store.tensors()[i], config.resume);
    }
    for (const auto& [name, t] : opt->state()) {
      from_checkpoint(*resumed, "optimizer." + name, t, config.resume);
    }
    opt->set_steps(metadata_int(*resumed, "optimizer_steps", config.resume));
    try {
      rng.set_state(metadata(*resumed, "rng", config.resume));
    } catch (const Error&) {
      throw ModelError(config.resume.string() + ": random generator state is malformed");
    }
  }

  std::ofstream metrics;
  if (!config.metrics.empty()) {
    metrics.open(config.metrics, std::ios::trunc);
    if (!metrics) throw DataError(config.metrics.string() + ": cannot open for writing");
    metrics << "epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds,images_per_second\n";
  }

  // The step log keeps a copy of the weights from before each step, allocated here once.
  std::ofstream step_log;
  std::vector<std::vector<float>> before;
  if (!config.step_log.empty()) {
    step_log.open(config.step_log, std::ios::trunc);
    if (!step_log) throw DataError(config.step_log.string() + ": cannot open for writing");
    step_log << "epoch,step,loss,lr,grad_norm,update_norm\n";
    for (const Tensor& p : store.tensors()) before.emplace_back(static_cast<std::size_t>(p.numel()));
  }

  std::unique_ptr<Runner> eval_full, eval_tail;
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  ProgressBar bar(config.progress);
  for (std::int64_t epoch = start_epoch + 1; epoch <= config.epochs; ++epoch) {
    // Fisher-Yates from the identity each epoch: the generator's state alone fixes the order,
    // so a resumed run sees the same batches as an uninterrupted one.
    std::iota(order.begin(), order.end(), 0);
    for (std::int64_t i = n - 1; i > 0; --i) {
      std::swap(order[static_cast<std::size_t>(i)],
                order[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i + 1)))]);
    }
    opt->set_learning_rate(scheduled_lr(config.schedule, lr, epoch, config.epochs));
    const auto t0 = Clock::now();
    double loss_sum = 0;
    std::int64_t correct = 0, step = 0;
    const std::int64_t steps = (n + batch - 1) / batch;
    for (std::int64_t start = 0; start < n; ++step) {
      TrainStep& run = n - start >= batch ? *full : *tail;
      run.run(train_set, order.data() + start);
      const double loss = run.loss;
      if (!std::isfinite(loss)) {
        bar.clear();
        throw DivergedError("loss became " + format_double(loss) + " at epoch " +
                            std::to_string(epoch) + ", step " + std::to_string(step + 1) +
                            " of " + std::to_string(steps) +
                            "; stopping (the learning rate is probably too high; the last saved "
                            "checkpoint, if any, is untouched)");
      }
      if (step_log) {
        run.combine_all();
        double grad_sq = 0;
        for (std::size_t i = 0; i < before.size(); ++i) {
          const Tensor& p = store.tensors()[i];
          std::copy(p.data<float>(), p.data<float>() + p.numel(), before[i].begin());
          const float* gv = run.grads[i].data<float>();
          for (std::int64_t j = 0; j < run.grads[i].numel(); ++j) {
            grad_sq += static_cast<double>(gv[j]) * gv[j];
          }
        }
        opt->step(run.grads);
        double update_sq = 0;
        for (std::size_t i = 0; i < before.size(); ++i) {
          const float* pv = store.tensors()[i].data<float>();
          for (std::size_t j = 0; j < before[i].size(); ++j) {
            const double d = static_cast<double>(pv[j]) - before[i][j];
            update_sq += d * d;
          }
        }
        step_log << epoch << ',' << step + 1 << ',' << format_double(loss) << ','
                 << format_double(opt->learning_rate()) << ',' << format_double(std::sqrt(grad_sq))
                 << ',' << format_double(std::sqrt(update_sq)) << '\n';
      } else {
        run.update(*opt);
      }
      loss_sum += loss * static_cast<double>(run.batch);
      correct += run.correct();
      start += run.batch;
      bar.update(start, n, loss_sum / static_cast<double>(start), seconds_since(t0));
    }
    EpochStats s;
    s.epoch = epoch;
    s.seconds = seconds_since(t0);
    bar.clear();
    s.train_loss = loss_sum / static_cast<double>(n);
    s.train_accuracy = static_cast<double>(correct) / static_cast<double>(n);
    s.images_per_second = static_cast<double>(n) / s.seconds;
    result.train_seconds += s.seconds;
    result.images_trained += n;
    result.test = evaluate_with(model, store, test_set, eval_full, eval_tail);
    s.test_loss = result.test.loss;
    s.test_accuracy = result.test.accuracy;
    result.epochs.push_back(s);
    if (step_log) {
      step_log.flush();
      if (!step_log) throw DataError(config.step_log.string() + ": write failed");
    }
    if (metrics) {
      metrics << s.epoch << ',' << format_double(s.train_loss) << ','
              << format_double(s.train_accuracy) << ',' << format_double(s.test_loss) << ','
              << format_double(s.test_accuracy) << ',' << format_double(s.seconds) << ','
              << format_double(s.images_per_second) << '\n';
      metrics.flush();
    }
    if (!config.save.empty()) {
      nn::Checkpoint ckpt;
      ckpt.metadata = {{"model", model},
                       {"epoch", std::to_string(epoch)},
                       {"optimizer", optimizer},
                       {"lr", format_double(lr)},
                       {"batch_size", std::to_string(batch)},
                       {"seed", std::to_string(config.seed)},
                       {"init", config.init},
                       {"schedule", config.schedule},
                       {"limit", std::to_string(n)},
                       {"optimizer_steps", std::to_string(opt->steps())},
                       {"rng", rng.state()},
                       {"test_accuracy", format_double(s.test_accuracy)}};
      for (std::size_t i = 0; i < store.names().size(); ++i) {
        ckpt.tensors.push_back(to_checkpoint(store.names()[i], store.tensors()[i]));
      }
      for (const auto& [name, t] : opt->state()) {
        ckpt.tensors.push_back(to_checkpoint("optimizer." + name, t));
      }
      nn::save_checkpoint(config.save, ckpt);
    }
    if (on_epoch) on_epoch(s);
  }
  if (result.epochs.empty()) {
    result.test = evaluate_with(model, store, test_set, eval_full, eval_tail);
  }
  return result;
}

// --- Model ----------------------------------------------------------------------------------

struct Model::Impl {
  std::string model;
  std::int64_t epochs = 0;
  nn::ParamStore store;
  mutable std::unique_ptr<Runner> eval_full, eval_tail, predict;
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model Model::load(const std::filesystem::path& file) {
  nn::Checkpoint ckpt = nn::load_checkpoint(file);
  auto impl = std::make_unique<Impl>();
  impl->model = model_of(ckpt, file);
  impl->epochs = metadata_int(ckpt, "epoch", file);
  // Building a graph creates the parameters in the store; then fill them.
  impl->predict = std::make_unique<Runner>(impl->model, 1, impl->store, Runner::Mode::kPredict);
  for (std::size_t i = 0; i < impl->store.names().size(); ++i) {
    from_checkpoint(ckpt, impl->store.names()[i], impl->store.tensors()[i], file);
  }
  return Model(std::move(impl));
}

const std::string& Model::name() const { return impl_->model; }
std::int64_t Model::epochs_trained() const { return impl_->epochs; }

EvalResult Model::evaluate(const Dataset& data) const {
  return evaluate_with(impl_->model, impl_->store, data, impl_->eval_full, impl_->eval_tail);
}

std::array<double, 10> Model::predict(const std::vector<float>& image) const {
  if (image.size() != static_cast<std::size_t>(kPixels)) {
    throw Error("predict: expected 784 pixels, got " + std::to_string(image.size()));
  }
  Runner& run = *impl_->predict;
  std::copy(image.begin(), image.end(), run.images.data<float>());
  run.labels.data<std::int32_t>()[0] = 0;
  run.ex->run();
  std::array<double, 10> p{};
  const Tensor& probs = (*run.ex)[run.probabilities];
  for (int i = 0; i < 10; ++i) p[static_cast<std::size_t>(i)] = probs.at(i);
  return p;
}

Inspection Model::inspect(const Dataset& data, std::int64_t index) const {
  if (index < 0 || index >= data.count) {
    throw Error("inspect: example " + std::to_string(index) + " is outside the data set's " +
                std::to_string(data.count) + " images");
  }
  Runner run(impl_->model, 1, impl_->store, Runner::Mode::kInspect);
  run.load(data, &index);
  run.ex->run();
  auto array_of = [](std::string name, const Tensor& t) {
    Inspection::Array a;
    a.name = std::move(name);
    const auto dims = t.shape().dims();
    a.shape.assign(dims.begin(), dims.end());
    a.data.assign(t.data<float>(), t.data<float>() + t.numel());
    return a;
  };
  Inspection r;
  r.index = index;
  r.label = run.labels.data<std::int32_t>()[0];
  const Tensor& probs = (*run.ex)[run.probabilities];
  for (int i = 0; i < 10; ++i) r.probabilities[static_cast<std::size_t>(i)] = probs.at(i);
  r.predicted = static_cast<int>(std::max_element(r.probabilities.begin(), r.probabilities.end()) -
                                 r.probabilities.begin());
  r.image = array_of("image", run.images);
  r.image.shape.erase(r.image.shape.begin());
  for (const auto& layer : run.net.layers) {
    r.layers.push_back(array_of(layer.name, (*run.ex)[layer.value]));
    r.layers.back().shape.erase(r.layers.back().shape.begin());
  }
  for (std::size_t i = 0; i < impl_->store.names().size(); ++i) {
    const Tensor& t = impl_->store.tensors()[i];
    if (t.shape().rank() == 4) r.kernels.push_back(array_of(impl_->store.names()[i], t));
  }
  return r;
}

}  // namespace tbgrad::mnist
