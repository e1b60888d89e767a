#include "nn/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "graph/format.hpp"
#include "graph/tensor.hpp"

namespace tbgrad::nn {
namespace {

constexpr double kPi = 3.14159265358979323846;

void require(bool ok, const std::string& who, const std::string& what) {
  if (!ok) throw Error(who + ": " + what);
}

const std::string& get(const std::map<std::string, std::string>& state, const std::string& key) {
  auto it = state.find(key);
  if (it == state.end()) throw Error("schedule state lacks '" + key + "'");
  return it->second;
}

double get_double(const std::map<std::string, std::string>& state, const std::string& key) {
  const std::string& s = get(state, key);
  char* end = nullptr;
  const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || std::isnan(v)) {
    throw Error("schedule state '" + key + "' = '" + s + "' is not a number");
  }
  return v;
}

std::int64_t get_count(const std::map<std::string, std::string>& state, const std::string& key) {
  const std::string& s = get(state, key);
  std::size_t used = 0;
  long long v = -1;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || v < 0) {
    throw Error("schedule state '" + key + "' = '" + s + "' is not a non-negative integer");
  }
  return v;
}

bool positive_finite(double v) {
  return std::isfinite(v) && v > 0;
}

}  // namespace

Schedule::Schedule(double base_lr) : base_lr_(base_lr) {
  require(positive_finite(base_lr), "schedule", "learning rate must be positive and finite");
}

void Schedule::step() {
  ++count_;
  lr_ = lr_at(count_);
}

void Schedule::step(double /*metric*/) {
  step();
}

std::map<std::string, std::string> Schedule::state() const {
  return {{"kind", name()}, {"count", std::to_string(count_)}, {"lr", format_double(lr_)}};
}

void Schedule::load_state(const std::map<std::string, std::string>& state) {
  const std::string& kind = get(state, "kind");
  if (kind != name()) {
    throw Error("schedule state is of a '" + kind + "' schedule, not '" + name() + "'");
  }
  count_ = get_count(state, "count");
  // A closed form's rate is recomputed from the count, with this schedule's settings (a run
  // resumed with a longer --epochs continues its cosine over the new length); "lr" is kept
  // for the schedules whose rate is history (PlateauSchedule reads it).
  get_double(state, "lr");  // checked
  lr_ = lr_at(count_);
}

// --- the closed forms --------------------------------------------------------------------

ConstantSchedule::ConstantSchedule(double lr) : Schedule(lr) {
  start();
}
double ConstantSchedule::lr_at(std::int64_t) const {
  return base_lr_;
}

StepSchedule::StepSchedule(double lr, std::int64_t step_size, double gamma)
    : Schedule(lr), step_size_(step_size), gamma_(gamma) {
  require(step_size >= 1, "StepSchedule", "step_size must be >= 1, got " + std::to_string(step_size));
  require(positive_finite(gamma), "StepSchedule", "gamma must be positive and finite");
  start();
}
double StepSchedule::lr_at(std::int64_t t) const {
  return base_lr_ * std::pow(gamma_, static_cast<double>(t / step_size_));
}

MultiStepSchedule::MultiStepSchedule(double lr, std::vector<std::int64_t> milestones, double gamma)
    : Schedule(lr), milestones_(std::move(milestones)), gamma_(gamma) {
  require(positive_finite(gamma), "MultiStepSchedule", "gamma must be positive and finite");
  for (std::int64_t m : milestones_) {
    require(m >= 0, "MultiStepSchedule", "milestones must be >= 0, got " + std::to_string(m));
  }
  std::sort(milestones_.begin(), milestones_.end());
  start();
}
double MultiStepSchedule::lr_at(std::int64_t t) const {
  const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), t) -
                      milestones_.begin();
  return base_lr_ * std::pow(gamma_, static_cast<double>(passed));
}

CosineSchedule::CosineSchedule(double lr, CosineOptions options)
    : Schedule(lr), options_(options) {
  require(options.warmup >= 0, "CosineSchedule", "warmup must be >= 0");
  require(options.total >= 1, "CosineSchedule",
          "total must be >= 1, got " + std::to_string(options.total));
  require(std::isfinite(options.min_lr) && options.min_lr >= 0 && options.min_lr <= lr,
          "CosineSchedule", "min_lr must be in [0, lr]");
  start();
}
double CosineSchedule::lr_at(std::int64_t t) const {
  const std::int64_t w = options_.warmup;
  if (t < w) return base_lr_ * static_cast<double>(t + 1) / static_cast<double>(w);
  if (t >= options_.total) return options_.min_lr;
  const double progress = static_cast<double>(t - w) / static_cast<double>(options_.total - w);
  // min_lr 0 and no warmup: lr * 0.5 * (1 + cos(pi * t / total)), the bits of the MNIST app's
  // cosine before this class.
  return options_.min_lr + (base_lr_ - options_.min_lr) * 0.5 * (1.0 + std::cos(kPi * progress));
}

OneCycleSchedule::OneCycleSchedule(double max_lr, std::int64_t total_steps,
                                   OneCycleOptions options)
    : Schedule(max_lr), total_(total_steps), options_(options) {
  require(total_steps >= 2, "OneCycleSchedule",
          "total_steps must be >= 2, got " + std::to_string(total_steps));
  require(options.pct_start > 0 && options.pct_start < 1, "OneCycleSchedule",
          "pct_start must be in (0, 1)");
  require(positive_finite(options.div_factor) && positive_finite(options.final_div_factor),
          "OneCycleSchedule", "div_factor and final_div_factor must be positive and finite");
  start();
}
double OneCycleSchedule::lr_at(std::int64_t t) const {
  // torch's _annealing_cos and phases, in its arithmetic.
  const double initial = base_lr_ / options_.div_factor;
  const double final_lr = initial / options_.final_div_factor;
  const auto anneal = [](double from, double to, double pct) {
    const double cos_out = std::cos(kPi * pct) + 1;
    return to + (from - to) / 2.0 * cos_out;
  };
  const auto step = static_cast<double>(std::min(t, total_ - 1));
  const double up_end = options_.pct_start * static_cast<double>(total_) - 1;
  const double down_end = static_cast<double>(total_) - 1;
  if (step <= up_end) return anneal(initial, base_lr_, step / up_end);
  return anneal(base_lr_, final_lr, (step - up_end) / (down_end - up_end));
}

PlateauSchedule::PlateauSchedule(double lr, PlateauOptions options)
    : Schedule(lr), options_(options), best_(std::numeric_limits<double>::infinity()) {
  require(positive_finite(options.factor) && options.factor < 1, "PlateauSchedule",
          "factor must be in (0, 1)");
  require(options.patience >= 0 && options.cooldown >= 0, "PlateauSchedule",
          "patience and cooldown must be >= 0");
  require(std::isfinite(options.threshold) && options.threshold >= 0, "PlateauSchedule",
          "threshold must be finite and >= 0");
  require(std::isfinite(options.min_lr) && options.min_lr >= 0, "PlateauSchedule",
          "min_lr must be finite and >= 0");
  start();
}
double PlateauSchedule::lr_at(std::int64_t) const {
  return base_lr_;
}
void PlateauSchedule::step() {
  throw Error("PlateauSchedule: step() needs the metric (call step(metric))");
}
void PlateauSchedule::step(double metric) {
  ++count_;
  if (metric < best_ * (1 - options_.threshold)) {
    best_ = metric;
    bad_ = 0;
  } else {
    ++bad_;
  }
  if (cooldown_left_ > 0) {
    --cooldown_left_;
    bad_ = 0;
  }
  if (bad_ > options_.patience) {
    const double reduced = std::max(lr_ * options_.factor, options_.min_lr);
    if (lr_ - reduced > options_.eps) lr_ = reduced;
    cooldown_left_ = options_.cooldown;
    bad_ = 0;
  }
}
std::map<std::string, std::string> PlateauSchedule::state() const {
  std::map<std::string, std::string> s = Schedule::state();
  s["best"] = format_double(best_);
  s["bad"] = std::to_string(bad_);
  s["cooldown"] = std::to_string(cooldown_left_);
  return s;
}
void PlateauSchedule::load_state(const std::map<std::string, std::string>& state) {
  Schedule::load_state(state);
  lr_ = get_double(state, "lr");
  best_ = get_double(state, "best");
  bad_ = get_count(state, "bad");
  cooldown_left_ = get_count(state, "cooldown");
}

// --- by name -----------------------------------------------------------------------------

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = {"constant", "step",     "multistep",
                                                 "cosine",   "onecycle", "plateau"};
  return names;
}

const std::string& schedule_choices() {
  static const std::string choices = [] {
    const std::vector<std::string>& names = schedule_names();
    std::string s = names.front();
    for (std::size_t i = 1; i < names.size(); ++i) {
      s += (i + 1 < names.size() ? ", " : " or ") + names[i];
    }
    return s;
  }();
  return choices;
}

void check_schedule_name(const std::string& name) {
  const std::vector<std::string>& names = schedule_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    throw Error("unknown learning-rate schedule '" + name + "' (expected " + schedule_choices() +
                ")");
  }
}

std::unique_ptr<Schedule> make_schedule(const std::string& name, double lr,
                                        const ScheduleConfig& config) {
  check_schedule_name(name);
  if (name == "constant") return std::make_unique<ConstantSchedule>(lr);
  if (name == "step") return std::make_unique<StepSchedule>(lr, config.step_size, config.gamma);
  if (name == "multistep") {
    return std::make_unique<MultiStepSchedule>(lr, config.milestones, config.gamma);
  }
  if (name == "cosine") {
    return std::make_unique<CosineSchedule>(
        lr, CosineOptions{.warmup = config.warmup, .total = config.total, .min_lr = config.min_lr});
  }
  if (name == "onecycle") return std::make_unique<OneCycleSchedule>(lr, config.total);
  if (name == "plateau") {
    PlateauOptions p = config.plateau;
    p.min_lr = config.min_lr;
    return std::make_unique<PlateauSchedule>(lr, p);
  }
  throw Error("make_schedule: schedule_names() lists '" + name + "', which it cannot build");
}

// --- checkpoints -------------------------------------------------------------------------

void add_to_checkpoint(Checkpoint& ckpt, const Schedule& schedule) {
  for (const auto& [key, value] : schedule.state()) ckpt.metadata["schedule." + key] = value;
}

void load_from_checkpoint(const Checkpoint& ckpt, const std::filesystem::path& file,
                          Schedule& schedule) {
  std::map<std::string, std::string> state;
  const std::string prefix = "schedule.";
  for (const auto& [key, value] : ckpt.metadata) {
    if (key.rfind(prefix, 0) == 0) state[key.substr(prefix.size())] = value;
  }
  try {
    schedule.load_state(state);
  } catch (const CheckpointError&) {
    throw;
  } catch (const Error& e) {
    throw CheckpointError(file, e.what());
  }
}

}  // namespace tbgrad::nn
