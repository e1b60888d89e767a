// Learning-rate schedules: the learning rate of each step (or epoch) of a run.
//
//   nn::CosineSchedule schedule(0.1, {.warmup = 500, .total = 10000});
//   for (...) {                       // one training step
//     schedule.apply(optimizer);      // optimizer.set_learning_rate(schedule.lr())
//     trainer.step(data, indices);
//     schedule.step();                // on to the next step
//   }
//
// Note [Schedules]: a schedule counts its step() calls (count()); lr() is the learning rate for
// the step (or epoch) numbered count(), from 0. Whether a unit is one optimizer step or one
// epoch is the caller's choice: call step() after each optimizer step, or after each epoch (and
// give `total`, `step_size`, `milestones` in the same unit). The schedules follow
// torch.optim.lr_scheduler's, whose scheduler.step() is this step(); where they differ, the
// class says so. Every schedule but ReduceOnPlateau is a function of count() alone;
// ReduceOnPlateau's learning rate depends on the metrics it was given. state() holds what a
// checkpoint needs to continue a schedule exactly (add_to_checkpoint / load_from_checkpoint
// below): the count, the learning rate and ReduceOnPlateau's counters, as exact decimal text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tbgrad/nn/checkpoint.hpp"
#include "tbgrad/nn/optim.hpp"

namespace tbgrad::nn {

class Schedule {
 public:
  virtual ~Schedule() = default;
  virtual const char* name() const = 0;

  double lr() const { return lr_; }  // for the step (or epoch) numbered count()
  std::int64_t count() const { return count_; }
  double base_lr() const { return base_lr_; }
  // On to the next step (or epoch). ReduceOnPlateau needs the metric: step(metric).
  virtual void step();
  // With the metric of the step or epoch just finished (ReduceOnPlateau's; the other
  // schedules ignore it).
  virtual void step(double metric);
  void apply(Optimizer& optimizer) const { optimizer.set_learning_rate(lr_); }

  // What a checkpoint keeps: "kind" (name()), "count", "lr", and a schedule's own keys.
  virtual std::map<std::string, std::string> state() const;
  // Restores state(); throws tbgrad::Error when `state` is of another kind or malformed.
  virtual void load_state(const std::map<std::string, std::string>& state);

 protected:
  explicit Schedule(double base_lr);
  // The learning rate for step t (every schedule but ReduceOnPlateau).
  virtual double lr_at(std::int64_t t) const = 0;
  // Sets count_ and lr_ = lr_at(t); a constructor calls start() once it can compute lr_at.
  void start() { lr_ = lr_at(count_); }

  double base_lr_;
  double lr_ = 0;
  std::int64_t count_ = 0;
};

// lr throughout (torch.optim.lr_scheduler.ConstantLR with factor 1).
class ConstantSchedule final : public Schedule {
 public:
  explicit ConstantSchedule(double lr);
  const char* name() const override { return "constant"; }

 private:
  double lr_at(std::int64_t t) const override;
};

// lr * gamma^floor(t / step_size) (torch.optim.lr_scheduler.StepLR).
class StepSchedule final : public Schedule {
 public:
  StepSchedule(double lr, std::int64_t step_size, double gamma = 0.1);
  const char* name() const override { return "step"; }

 private:
  double lr_at(std::int64_t t) const override;
  std::int64_t step_size_;
  double gamma_;
};

// lr * gamma^(the milestones <= t) (torch.optim.lr_scheduler.MultiStepLR; a milestone given
// twice counts twice, as there).
class MultiStepSchedule final : public Schedule {
 public:
  MultiStepSchedule(double lr, std::vector<std::int64_t> milestones, double gamma = 0.1);
  const char* name() const override { return "multistep"; }

 private:
  double lr_at(std::int64_t t) const override;
  std::vector<std::int64_t> milestones_;  // sorted
  double gamma_;
};

struct CosineOptions {
  std::int64_t warmup = 0;  // steps of linear warmup
  std::int64_t total = 1;   // steps in all, warmup included
  double min_lr = 0;
};

// Linear warmup then a half cosine: lr * (t + 1) / warmup for t < warmup, then
// min_lr + (lr - min_lr) * (1 + cos(pi * (t - warmup) / (total - warmup))) / 2, and min_lr
// from t = total on. Without warmup it is torch.optim.lr_scheduler.CosineAnnealingLR with
// T_max = total and eta_min = min_lr (which rises again after T_max; this stays at min_lr);
// the warmup is LinearLR(start_factor = 1 / warmup, total_iters = warmup - 1) before it, as
// SequentialLR would chain them.
class CosineSchedule final : public Schedule {
 public:
  CosineSchedule(double lr, CosineOptions options);
  const char* name() const override { return "cosine"; }

 private:
  double lr_at(std::int64_t t) const override;
  CosineOptions options_;
};

struct OneCycleOptions {
  double pct_start = 0.3;  // of the steps spent rising
  double div_factor = 25;  // the first lr is max_lr / div_factor
  double final_div_factor = 1e4;  // the last is that / final_div_factor
};

// torch.optim.lr_scheduler.OneCycleLR with anneal_strategy 'cos', three_phase false: from
// max_lr / div_factor up to max_lr over the first pct_start of total_steps along a half
// cosine, then down to max_lr / div_factor / final_div_factor. Learning rate only (no momentum
// cycling). Past total_steps - 1 the learning rate stays at its last value (torch raises).
class OneCycleSchedule final : public Schedule {
 public:
  OneCycleSchedule(double max_lr, std::int64_t total_steps, OneCycleOptions options = {});
  const char* name() const override { return "onecycle"; }

 private:
  double lr_at(std::int64_t t) const override;
  std::int64_t total_;
  OneCycleOptions options_;
};

struct PlateauOptions {
  double factor = 0.1;       // the new lr is lr * factor
  std::int64_t patience = 10;  // bad steps tolerated before a reduction
  double threshold = 1e-4;   // relative: better means metric < best * (1 - threshold)
  std::int64_t cooldown = 0;   // steps after a reduction during which bad ones are not counted
  double min_lr = 0;
  double eps = 1e-8;         // a reduction smaller than this is not made
};

// torch.optim.lr_scheduler.ReduceLROnPlateau in mode 'min', threshold_mode 'rel': step(metric)
// after each epoch (or step) with the quantity to minimise (a validation loss); more than
// `patience` steps without improvement multiply the learning rate by `factor`. step() without
// a metric throws tbgrad::Error. A NaN metric is not an improvement.
class PlateauSchedule final : public Schedule {
 public:
  PlateauSchedule(double lr, PlateauOptions options = {});
  const char* name() const override { return "plateau"; }
  void step() override;
  void step(double metric) override;
  std::map<std::string, std::string> state() const override;
  void load_state(const std::map<std::string, std::string>& state) override;

  double best() const { return best_; }
  std::int64_t bad_steps() const { return bad_; }

 private:
  double lr_at(std::int64_t t) const override;
  PlateauOptions options_;
  double best_;
  std::int64_t bad_ = 0, cooldown_left_ = 0;
};

// The schedules make_schedule builds, by name: "constant", "step", "multistep", "cosine",
// "onecycle", "plateau".
const std::vector<std::string>& schedule_names();
// As a message lists them: "constant, step, multistep, cosine, onecycle or plateau".
const std::string& schedule_choices();
// Throws tbgrad::Error ("unknown learning-rate schedule 'linear' (expected ...)") unless `name`
// is one of schedule_names().
void check_schedule_name(const std::string& name);

// What make_schedule reads besides the name and learning rate (each schedule the fields it
// needs; units are steps or epochs, as the caller steps it).
struct ScheduleConfig {
  std::int64_t total = 1;        // cosine, onecycle
  std::int64_t warmup = 0;       // cosine
  double min_lr = 0;             // cosine, plateau
  std::int64_t step_size = 1;    // step
  std::vector<std::int64_t> milestones = {};  // multistep
  double gamma = 0.1;            // step, multistep
  PlateauOptions plateau = {};   // plateau (its min_lr is min_lr above)
};
std::unique_ptr<Schedule> make_schedule(const std::string& name, double lr,
                                        const ScheduleConfig& config = {});

// The schedule's state() as checkpoint metadata "schedule.<key>".
void add_to_checkpoint(Checkpoint& ckpt, const Schedule& schedule);
// Restores it; throws CheckpointError naming `file` when it is missing, of another kind or
// malformed.
void load_from_checkpoint(const Checkpoint& ckpt, const std::filesystem::path& file,
                          Schedule& schedule);

}  // namespace tbgrad::nn
