// Training, evaluation, prediction and checkpoints for tbgrad-mnist, on the public tbgrad API.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "apps/mnist/idx.hpp"
#include "tbgrad/nn/schedule.hpp"
#include "tbgrad/nn/train.hpp"

namespace tbgrad::mnist {

struct TrainConfig {
  std::string model = "seed";
  std::string optimizer;  // empty: the model's default
  double lr = 0;          // 0: the default for model and optimizer
  std::string init = "xavier";  // tbgrad-mnist passes "he" for resnet unless --init is given
  // Learning rate over the run, one of nn::schedule_names() (app_schedule says how each is set
  // up): "cosine" decays it from lr towards 0 along a half cosine over the epochs
  // (lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2), "constant" keeps it. With warmup_epochs
  // or for model "resnet", cosine is stepped per step instead (app_schedule).
  std::string schedule = "cosine";
  // Steps of linear warmup, in epochs (0 <= warmup_epochs <= epochs; only with "constant" or
  // "cosine"): lr * (k + 1) / Wn for the first Wn = warmup_epochs * steps-per-epoch steps, then
  // the schedule per step (app_schedule). scripts/pytorch_mnist.py's formula.
  std::int64_t warmup_epochs = 0;
  // Weight decay (momentum, sgd, adam: coupled L2; adamw: decoupled) of the parameters whose
  // role decays (nn::decay_mask: weights, not biases or batch norm's scales and shifts); unset:
  // none (AdamW: its default 0.01 on every parameter, as before).
  std::optional<double> weight_decay;
  // Random crop with zero padding 2 and horizontal flip of the training images, seeded with
  // `seed` (data::Augment{.pad = 2, .flip = true, .seed = seed}).
  bool augment = false;
  std::int64_t epochs = 5;
  std::int64_t batch_size = 32;
  std::int64_t limit = 0;  // 0: the whole training set
  std::uint64_t seed = 1;
  std::filesystem::path save;     // written after every epoch when set
  std::filesystem::path resume;   // continue from this checkpoint when set
  std::filesystem::path metrics;  // CSV, one row per epoch, when set
  // CSV, one row per training step, when set: the loss, the learning rate, the gradient's norm
  // and the norm of the step's change to the weights (all parameters as one vector).
  std::filesystem::path step_log;
  bool progress = false;          // live progress bar on stdout
  // When set and nonzero at the start of a step (a signal handler sets it), training stops
  // there with Interrupted; the last saved checkpoint is the last complete epoch.
  const std::atomic<int>* stop = nullptr;
  // The processes training together (docs/distributed.md); null: this one alone. Every rank
  // trains the same model; only the caller decides which rank writes the files above.
  dist::Communicator* comm = nullptr;
};

// The app's use of the library's learning-rate schedules (tbgrad/nn/schedule.hpp), for a run of
// `epochs` epochs of `steps_per_epoch` steps from `lr`:
//   constant   lr throughout
//   cosine     from lr towards 0 along a half cosine over the epochs (stepped per epoch)
//   step       x0.1 every third of the epochs (at least every epoch; per epoch)
//   multistep  x0.1 at half and at three quarters of the epochs (per epoch)
//   onecycle   torch's OneCycleLR with its defaults, peaking at lr (stepped per step)
//   plateau    x0.1 after an epoch whose training loss is no better than the best (relative
//              1e-4) for more than one epoch (patience 1), down to lr / 1000 (per epoch)
// With warmup_epochs > 0 or per_step (the resnet model), constant and cosine are stepped per
// step as scripts/pytorch_mnist.py's: with T = epochs * steps_per_epoch and Wn = warmup_epochs *
// steps_per_epoch, lr_k = lr * (k + 1) / Wn for k < Wn, then lr (constant) or
// lr * (1 + cos(pi * (k - Wn) / (T - Wn))) / 2 (cosine). Other schedules take no warmup.
// Throws tbgrad::Error (nn::check_schedule_name's) for another name, or for a warmup with
// another schedule or longer than the run.
struct AppSchedule {
  std::unique_ptr<nn::Schedule> schedule;
  bool per_step = false;  // stepped after every training step; otherwise after every epoch
};
AppSchedule app_schedule(const std::string& name, double lr, std::int64_t epochs,
                         std::int64_t steps_per_epoch, std::int64_t warmup_epochs = 0,
                         bool per_step = false);

// Defaults chosen by measurement (docs/experiments.md): what a user who passes nothing gets.
struct Defaults {
  std::string optimizer;
  double lr;
};
Defaults default_hyperparameters(const std::string& model, const std::string& optimizer);

struct EpochStats {
  std::int64_t epoch = 0;
  double train_loss = 0, train_accuracy = 0;
  double test_loss = 0, test_accuracy = 0;
  double seconds = 0;            // training time of the epoch (no evaluation)
  double images_per_second = 0;
};

struct EvalResult {
  std::int64_t count = 0;
  double loss = 0, accuracy = 0;
  std::array<std::array<std::int64_t, 10>, 10> confusion{};  // [true][predicted]
};

struct TrainResult {
  std::vector<EpochStats> epochs;  // the epochs run by this invocation
  std::int64_t epochs_trained = 0;  // the model's epochs in all, a resumed checkpoint's included
  double train_seconds = 0;
  std::int64_t images_trained = 0;
  EvalResult test;
  std::string optimizer;
  double lr = 0;
  std::int64_t batch_size = 0;
  nn::Trainer::ExchangeStats exchange;  // between ranks, under mpirun
};

// A loss that is not finite: training stops and the last good checkpoint stays as it was.
using DivergedError = nn::DivergedError;

// Training stopped at the start of a step because TrainConfig::stop was set.
class Interrupted : public std::runtime_error {
 public:
  Interrupted(const std::string& message, std::int64_t epoch)
      : std::runtime_error(message), epoch_(epoch) {}
  std::int64_t epoch() const { return epoch_; }  // the epoch that did not complete

 private:
  std::int64_t epoch_;
};

// A checkpoint that cannot be used for this run (another model, missing tensors, ...).
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Calls `on_epoch` after each epoch (for the per-epoch line). Throws DataError, DivergedError,
// ModelError or nn::CheckpointError.
TrainResult train(const TrainConfig& config, const Dataset& train_set, const Dataset& test_set,
                  const std::function<void(const EpochStats&)>& on_epoch);

// What a model does with one image, layer by layer (tbgrad-mnist inspect).
struct Inspection {
  struct Array {
    std::string name;
    std::vector<std::int64_t> shape;
    std::vector<float> data;  // row-major
  };
  std::int64_t index = 0;  // in the data set
  int label = 0, predicted = 0;
  std::array<double, 10> probabilities{};
  Array image;                // [1, 28, 28]
  std::vector<Array> layers;  // each layer's output for this image, in order
  std::vector<Array> kernels;  // every convolution's weights [out, in, kh, kw]
};

// A trained model loaded from a checkpoint.
class Model {
 public:
  static Model load(const std::filesystem::path& file);
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  const std::string& name() const;
  std::int64_t epochs_trained() const;
  EvalResult evaluate(const Dataset& data) const;
  // Class probabilities of one 28x28 image given as 784 floats in [0, 1].
  std::array<double, 10> predict(const std::vector<float>& image) const;
  // Runs example `index` of `data` through the model, keeping every layer's output.
  Inspection inspect(const Dataset& data, std::int64_t index) const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tbgrad::mnist
