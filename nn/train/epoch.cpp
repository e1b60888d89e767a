// One epoch of training (nn::train_epoch) and its progress line.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "graph/format.hpp"
#include "nn/train.hpp"

namespace tbgrad::nn {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled) {}
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

bool show_progress() {
  return isatty(STDOUT_FILENO) == 1;
}

EpochResult train_epoch(Trainer& trainer, data::Batcher& batches, Rng& rng,
                        const EpochOptions& options) {
  if (batches.augment().enabled() && !(batches.augment() == trainer.augment())) {
    throw Error("train_epoch: the Batcher has an augmentation (data::Augment) that the trainer "
                "does not: the trainer loads the batches itself, so set "
                "TrainerOptions::augment instead");
  }
  batches.shuffle(rng);
  trainer.set_epoch(static_cast<std::uint64_t>(options.epoch));
  const data::Dataset& data = batches.dataset();
  const std::int64_t n = batches.size();
  const std::int64_t steps = batches.num_batches();
  ProgressLine bar(options.progress);
  EpochResult r;
  const auto t0 = Clock::now();
  double loss_sum = 0;
  std::int64_t correct = 0, done = 0;
  for (std::int64_t step = 0; step < steps; ++step) {
    if (options.before_step) {
      try {
        options.before_step(step, steps);
      } catch (...) {
        bar.clear();
        throw;
      }
    }
    trainer.compute(data, batches.batch(step));
    // The next batch's examples come into the caches while this one's update runs.
    if (step + 1 < steps) trainer.prefetch(data, batches.batch(step + 1));
    const double loss = trainer.loss();
    if (!std::isfinite(loss)) {
      bar.clear();
      throw DivergedError("loss became " + format_double(loss) + " at epoch " +
                          std::to_string(options.epoch) + ", step " + std::to_string(step + 1) +
                          " of " + std::to_string(steps) +
                          "; stopping (the learning rate is probably too high; the last saved "
                          "checkpoint, if any, is untouched)");
    }
    if (options.before_update) options.before_update(step);
    trainer.update();
    if (options.after_update) options.after_update(step);
    loss_sum += loss * static_cast<double>(trainer.batch());
    correct += trainer.correct();
    done += trainer.batch();
    bar.update(done, n, loss_sum / static_cast<double>(done), seconds_since(t0));
  }
  r.seconds = seconds_since(t0);
  bar.clear();
  r.examples = n;
  r.steps = steps;
  r.loss = loss_sum / static_cast<double>(n);
  r.has_accuracy = trainer.has_accuracy();
  r.accuracy = r.has_accuracy ? static_cast<double>(correct) / static_cast<double>(n)
                              : std::numeric_limits<double>::quiet_NaN();
  return r;
}

}  // namespace tbgrad::nn
