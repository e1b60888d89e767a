#include "apps/mnist/trainer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <tuple>
#include <tbgrad.hpp>

#include "apps/mnist/step_log.hpp"

// The app's part of training: its three models by name, their default hyperparameters and
// learning-rate schedule, resume and checkpoint metadata, the metrics and step-log files, and
// prediction / inspection. Batching, the data-parallel step, evaluation and checkpoint tensors
// are the library's (tbgrad/nn/train.hpp, tbgrad/nn/params_io.hpp).
namespace tbgrad::mnist {
namespace {

constexpr std::int64_t kPixels = std::int64_t{28} * 28;

// --- checkpoint metadata --------------------------------------------------------------------

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

EvalResult to_eval_result(const nn::Evaluation& e) {
  // The app reports accuracy: its models are classifiers (nn::model_fn), whose outputs are
  // class scores; a model that is not would have no accuracy to print (nn::Evaluation).
  if (!e.has_accuracy) {
    throw ModelError("the model's outputs are not class scores: the app reports accuracy and "
                     "trains classifiers only");
  }
  EvalResult r;
  r.count = e.count;
  r.loss = e.loss;
  r.accuracy = e.accuracy;
  const auto c = static_cast<std::size_t>(e.classes);
  for (std::size_t t = 0; t < std::min<std::size_t>(c, 10); ++t) {
    for (std::size_t p = 0; p < std::min<std::size_t>(c, 10); ++p)
      r.confusion[t][p] = e.confusion[t * c + p];
  }
  return r;
}

}  // namespace

AppSchedule app_schedule(const std::string& name, double lr, std::int64_t epochs,
                         std::int64_t steps_per_epoch, std::int64_t warmup_epochs,
                         bool per_step) {
  nn::check_schedule_name(name);
  const std::int64_t e = std::max<std::int64_t>(epochs, 1);
  nn::ScheduleConfig c;
  AppSchedule s;
  if (warmup_epochs > 0 || (per_step && name == "cosine")) {
    if (name != "constant" && name != "cosine") {
      throw Error("a warmup (and the per-step schedule of --model resnet) needs --schedule "
                  "cosine or constant, not '" + name + "'");
    }
    if (warmup_epochs < 0 || warmup_epochs > epochs) {
      throw Error("--warmup-epochs " + std::to_string(warmup_epochs) + " is not in [0, " +
                  std::to_string(epochs) + "] (--epochs)");
    }
    const std::int64_t total = std::max<std::int64_t>(1, e * std::max<std::int64_t>(steps_per_epoch, 1));
    c.warmup = warmup_epochs * std::max<std::int64_t>(steps_per_epoch, 1);
    // Constant after the warmup: a cosine whose decay never starts (its total beyond any step).
    c.total = name == "cosine" ? total : std::numeric_limits<std::int64_t>::max() / 4;
    s.per_step = true;
    s.schedule = nn::make_schedule("cosine", lr, c);
    return s;
  }
  if (name == "cosine") {
    c.total = e;
  } else if (name == "step") {
    c.step_size = std::max<std::int64_t>(1, e / 3);
  } else if (name == "multistep") {
    c.milestones = {e / 2, e * 3 / 4};
  } else if (name == "onecycle") {
    c.total = std::max<std::int64_t>(2, e * steps_per_epoch);
    s.per_step = true;
  } else if (name == "plateau") {
    c.plateau.patience = 1;
    c.min_lr = lr / 1000;
  }
  s.schedule = nn::make_schedule(name, lr, c);
  return s;
}

Defaults default_hyperparameters(const std::string& model, const std::string& optimizer) {
  // Measured on real MNIST with the cosine schedule, batch 32, seed 1 (docs/results.md): the
  // best of sgd 0.1, momentum 0.02 and adam 0.001/0.002 for each model.
  // resnet: scripts/bench_epoch.sh's recipe (momentum 0.05).
  std::string opt = optimizer;
  if (opt.empty()) opt = model == "seed-nopool" || model == "resnet" ? "momentum" : "adam";
  nn::check_optimizer_name(opt);
  double lr = 0;
  if (opt == "sgd") {
    lr = 0.1;
  } else if (opt == "momentum") {
    lr = model == "resnet" ? 0.05 : 0.02;
  } else if (opt == "adam" || opt == "adamw") {  // adamw: not measured; Adam's
    lr = model == "seed" ? 2e-3 : 1e-3;
  }
  return {opt, lr};
}

TrainResult train(const TrainConfig& config, const Dataset& train_set, const Dataset& test_set,
                  const std::function<void(const EpochStats&)>& on_epoch) {
  TrainResult result;
  const std::string& model = config.model;
  std::string optimizer = config.optimizer;
  double lr = config.lr;
  std::int64_t start_epoch = 0;
  nn::Rng rng(config.seed);

  // Resume: the checkpoint decides the model and optimizer; its state replaces a fresh one.
  std::optional<nn::Checkpoint> resumed;
  if (!config.resume.empty()) {
    resumed = nn::load_checkpoint(config.resume);
    const std::string m = model_of(*resumed, config.resume);
    if (m != model) {
      throw ModelError(config.resume.string() + ": checkpoint holds model '" + m + "', not '" +
                       model + "' (pass --model " + m + ")");
    }
    const std::string o = metadata(*resumed, "optimizer", config.resume);
    if (!optimizer.empty() && optimizer != o) {
      throw ModelError(config.resume.string() + ": checkpoint was trained with optimizer '" + o +
                       "', not '" + optimizer + "'");
    }
    try {
      nn::check_optimizer_name(o);
    } catch (const Error&) {
      throw ModelError(config.resume.string() + ": checkpoint names an unknown optimizer '" + o +
                       "' (expected " + nn::optimizer_choices() + ")");
    }
    optimizer = o;
    if (lr == 0) lr = metadata_positive_double(*resumed, "lr", config.resume);
    start_epoch = metadata_int(*resumed, "epoch", config.resume);
    if (config.epochs < start_epoch) {
      throw ModelError(config.resume.string() + ": checkpoint has trained " +
                       std::to_string(start_epoch) + " epochs, more than --epochs " +
                       std::to_string(config.epochs) + " (--epochs is the total, pass --epochs " +
                       std::to_string(start_epoch) + " or more)");
    }
  }
  const Defaults defaults = default_hyperparameters(model, optimizer);
  optimizer = defaults.optimizer;
  if (lr == 0) lr = defaults.lr;
  result.optimizer = optimizer;
  result.lr = lr;

  if (train_set.count == 0) throw DataError("the training set is empty");
  data::Batcher batches(train_set, config.batch_size, config.limit);
  const std::int64_t n = batches.size();
  result.batch_size = batches.batch_size();
  result.epochs_trained = start_epoch;
  if (resumed) {
    // Another batch size or data set would silently change what "resume = training straight"
    // means (docs/reliability.md, "Resume").
    for (const auto& [key, value, flag] :
         {std::tuple<const char*, std::int64_t, const char*>{"batch_size", batches.batch_size(),
                                                              "--batch-size"},
          {"limit", n, "--limit"},
          {"warmup_epochs", config.warmup_epochs, "--warmup-epochs"}}) {
      if (resumed->metadata.count(key) == 0) continue;  // older checkpoints lack them
      const std::int64_t saved = metadata_int(*resumed, key, config.resume);
      if (saved != value) {
        throw ModelError(config.resume.string() + ": checkpoint was trained with " + key + " " +
                         std::to_string(saved) + ", this run would use " + std::to_string(value) +
                         " (pass " + flag + " " + std::to_string(saved) + " to resume it)");
      }
    }
  }

  const nn::ModelFn net = nn::model_fn(model);
  nn::ParamStore store;
  nn::create_parameters(net, store);
  nn::initialize(store, nn::parse_init(config.init), rng);
  std::unique_ptr<nn::Optimizer> opt;
  if (config.weight_decay) {
    nn::OptimizerConfig oc;
    oc.weight_decay = *config.weight_decay;
    oc.decay = nn::decay_mask(store);
    opt = nn::make_optimizer(optimizer, store.tensors(), lr, oc);
  } else {
    opt = nn::make_optimizer(optimizer, store.tensors(), lr);
  }
  AppSchedule schedule = app_schedule(config.schedule, lr, config.epochs, batches.num_batches(),
                                      config.warmup_epochs, model == "resnet");
  if (resumed) {
    nn::load_from_checkpoint(*resumed, config.resume, store, opt.get());
    if (resumed->metadata.count("schedule.kind")) {
      nn::load_from_checkpoint(*resumed, config.resume, *schedule.schedule);
    } else {
      // A checkpoint from before the library's schedules: the app's were cosine and constant,
      // stepped once per epoch.
      for (std::int64_t e = 0; e < start_epoch; ++e) schedule.schedule->step();
    }
    try {
      rng.set_state(metadata(*resumed, "rng", config.resume));
    } catch (const Error&) {
      throw ModelError(config.resume.string() + ": random generator state is malformed");
    }
  }
  dist::Communicator& comm = config.comm ? *config.comm : dist::single();
  if (comm.size() > 1) {
    // Equal arguments and data give equal parameters here; another --resume file would not.
    std::uint64_t h = 0;
    for (const Tensor& t : store.tensors()) {
      h = dist::fingerprint({static_cast<const std::byte*>(t.raw()), t.nbytes()}, h);
    }
    dist::check_same(comm, "the initial parameters (from --init and --seed, or --resume)",
                     std::to_string(h));
  }
  nn::TrainerOptions to{.batch_size = batches.batch_size(), .comm = &comm};
  if (config.augment) to.augment = data::Augment{.pad = 2, .flip = true, .seed = config.seed};
  to.seed = config.seed;  // dropout's masks
  nn::Trainer trainer(net, store, *opt, to);
  if (!trainer.has_accuracy()) {  // as to_eval_result: no epoch accuracy to report
    throw ModelError("model '" + model + "': its outputs are not class scores; the app reports "
                     "accuracy and trains classifiers only");
  }
  // Collective under ranks: each evaluates its share of the test set (nn::Evaluator).
  nn::Evaluator evaluator(net, store, nn::Evaluator::kDefaultBatchSize, &comm);

  std::ofstream metrics;
  if (!config.metrics.empty()) {
    metrics.open(config.metrics, std::ios::trunc);
    if (!metrics) throw DataError(config.metrics.string() + ": cannot open for writing");
    metrics
        << "epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds,images_per_second\n";
  }
  StepLog step_log(config.step_log, store);

  for (std::int64_t epoch = start_epoch + 1; epoch <= config.epochs; ++epoch) {
    schedule.schedule->apply(*opt);
    nn::EpochOptions eo;
    eo.epoch = epoch;
    eo.progress = config.progress;
    if (config.stop || schedule.per_step) {
      eo.before_step = [&, epoch](std::int64_t step, std::int64_t steps) {
        if (schedule.per_step) schedule.schedule->apply(*opt);
        // All ranks stop at the same step: any rank's signal stops them all.
        if (!config.stop || !dist::any(comm, config.stop->load(std::memory_order_relaxed) != 0)) {
          return;
        }
        throw Interrupted("interrupted at epoch " + std::to_string(epoch) + ", step " +
                              std::to_string(step + 1) + " of " + std::to_string(steps),
                          epoch);
      };
    }
    if (step_log.enabled()) eo.before_update = [&](std::int64_t) { step_log.before_update(); };
    if (step_log.enabled() || schedule.per_step) {
      eo.after_update = [&](std::int64_t step) {
        if (step_log.enabled()) step_log.after_update(epoch, step, trainer, opt->learning_rate());
        if (schedule.per_step) schedule.schedule->step();
      };
    }
    const nn::EpochResult er = nn::train_epoch(trainer, batches, rng, eo);
    if (!schedule.per_step) schedule.schedule->step(er.loss);  // (only plateau reads the loss)
    EpochStats s;
    s.epoch = epoch;
    s.seconds = er.seconds;
    s.train_loss = er.loss;
    s.train_accuracy = er.accuracy;
    s.images_per_second = static_cast<double>(n) / s.seconds;
    result.train_seconds += s.seconds;
    result.images_trained += n;
    result.test = to_eval_result(evaluator.evaluate(test_set));
    s.test_loss = result.test.loss;
    s.test_accuracy = result.test.accuracy;
    result.epochs.push_back(s);
    step_log.flush();
    if (!config.metrics.empty()) {  // (an unopened stream is "good" too)
      metrics << s.epoch << ',' << format_double(s.train_loss) << ','
              << format_double(s.train_accuracy) << ',' << format_double(s.test_loss) << ','
              << format_double(s.test_accuracy) << ',' << format_double(s.seconds) << ','
              << format_double(s.images_per_second) << '\n';
      metrics.flush();
      if (!metrics) throw DataError(config.metrics.string() + ": write failed");
    }
    if (!config.save.empty()) {
      nn::Checkpoint ckpt;
      ckpt.metadata = {{"model", model},
                       {"epoch", std::to_string(epoch)},
                       {"lr", format_double(lr)},
                       {"batch_size", std::to_string(batches.batch_size())},
                       {"seed", std::to_string(config.seed)},
                       {"init", config.init},
                       {"schedule", config.schedule},
                       {"warmup_epochs", std::to_string(config.warmup_epochs)},
                       {"weight_decay", config.weight_decay ? format_double(*config.weight_decay)
                                                            : std::string("(default)")},
                       {"augment", config.augment ? "1" : "0"},
                       {"limit", std::to_string(n)},
                       {"rng", rng.state()},
                       {"test_accuracy", format_double(s.test_accuracy)}};
      nn::add_to_checkpoint(ckpt, store, opt.get());
      nn::add_to_checkpoint(ckpt, *schedule.schedule);  // "schedule.<key>": its state
      nn::save_checkpoint(config.save, ckpt);
    }
    result.epochs_trained = epoch;
    if (on_epoch) on_epoch(s);
  }
  if (result.epochs.empty()) result.test = to_eval_result(evaluator.evaluate(test_set));
  result.exchange = trainer.exchange_stats();
  return result;
}

// --- Model ----------------------------------------------------------------------------------

struct Model::Impl {
  std::string model;
  std::int64_t epochs = 0;
  nn::ParamStore store;
  std::unique_ptr<nn::Evaluator> evaluator;
  // One image through the model, keeping every layer's output (predict, inspect).
  Graph g;
  nn::Network net;
  Value probabilities;
  std::unique_ptr<Executor> ex;
  Tensor image{Shape{1, 1, 28, 28}, DType::kF32}, label{Shape{1}, DType::kI32};

  void run_image() const {
    label.data<std::int32_t>()[0] = 0;
    ex->run();
  }
  std::array<double, 10> probs() const {
    std::array<double, 10> p{};
    const Tensor& t = (*ex)[probabilities];
    for (int i = 0; i < 10; ++i) p[static_cast<std::size_t>(i)] = t.at(i);
    return p;
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model Model::load(const std::filesystem::path& file) {
  nn::Checkpoint ckpt = nn::load_checkpoint(file);
  auto impl = std::make_unique<Impl>();
  impl->model = model_of(ckpt, file);
  // A checkpoint the library wrote for one of these models need not say how long it trained.
  impl->epochs = ckpt.metadata.count("epoch") ? metadata_int(ckpt, "epoch", file) : 0;
  // Building the graph creates the parameters in the store; then fill them.
  Impl& m = *impl;
  m.net = nn::build_network(m.model, m.g, 1, m.store);
  m.probabilities = softmax(m.net.logits);
  std::vector<Value> layers;
  for (const auto& layer : m.net.layers) layers.push_back(layer.value);
  m.ex = std::make_unique<Executor>(m.g, std::initializer_list<ValueList>{m.probabilities, layers});
  m.ex->bind(m.net.images, m.image).bind(m.net.labels, m.label);
  m.ex->set_training(false);  // batch norm's running statistics, no dropout
  nn::load_from_checkpoint(ckpt, file, m.store);
  m.evaluator = std::make_unique<nn::Evaluator>(nn::model_fn(m.model), m.store);
  return Model(std::move(impl));
}

const std::string& Model::name() const {
  return impl_->model;
}
std::int64_t Model::epochs_trained() const {
  return impl_->epochs;
}

EvalResult Model::evaluate(const Dataset& data) const {
  return to_eval_result(impl_->evaluator->evaluate(data));
}

std::array<double, 10> Model::predict(const std::vector<float>& image) const {
  if (image.size() != static_cast<std::size_t>(kPixels)) {
    throw Error("predict: expected 784 pixels, got " + std::to_string(image.size()));
  }
  std::copy(image.begin(), image.end(), impl_->image.data<float>());
  impl_->run_image();
  return impl_->probs();
}

Inspection Model::inspect(const Dataset& data, std::int64_t index) const {
  if (index < 0 || index >= data.count) {
    throw Error("inspect: example " + std::to_string(index) + " is outside the data set's " +
                std::to_string(data.count) + " images");
  }
  const Impl& m = *impl_;
  data::load_examples(data, std::span<const std::int64_t>(&index, 1), m.image, m.label);
  const int label = m.label.data<std::int32_t>()[0];
  m.ex->run();
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
  r.label = label;
  r.probabilities = m.probs();
  r.predicted = static_cast<int>(std::max_element(r.probabilities.begin(), r.probabilities.end()) -
                                 r.probabilities.begin());
  r.image = array_of("image", m.image);
  r.image.shape.erase(r.image.shape.begin());
  for (const auto& layer : m.net.layers) {
    r.layers.push_back(array_of(layer.name, (*m.ex)[layer.value]));
    r.layers.back().shape.erase(r.layers.back().shape.begin());
  }
  for (std::size_t i = 0; i < m.store.names().size(); ++i) {
    const Tensor& t = m.store.tensors()[i];
    if (t.shape().rank() == 4) r.kernels.push_back(array_of(m.store.names()[i], t));
  }
  return r;
}

}  // namespace tbgrad::mnist
