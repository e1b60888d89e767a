// The step log of `tbgrad-mnist train --step-log FILE`: per step the loss, the learning rate,
// the gradient's norm and the norm of the step's change to the weights (all parameters as one
// vector), as CSV.
#pragma once

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <tbgrad.hpp>
#include <vector>

#include "apps/mnist/idx.hpp"

namespace tbgrad::mnist {

// The copy of the weights from before each step is allocated here once. A disabled log (empty
// path) does nothing.
class StepLog {
 public:
  StepLog(const std::filesystem::path& file, const nn::ParamStore& store)
      : file_(file), store_(store) {
    if (file.empty()) return;
    out_.open(file, std::ios::trunc);
    if (!out_) throw DataError(file.string() + ": cannot open for writing");
    out_ << "epoch,step,loss,lr,grad_norm,update_norm\n";
    for (const Tensor& p : store.tensors())
      before_.emplace_back(static_cast<std::size_t>(p.numel()));
  }
  bool enabled() const { return out_.is_open(); }
  void before_update() {
    for (std::size_t i = 0; i < before_.size(); ++i) {
      const Tensor& p = store_.tensors()[i];
      std::copy(p.data<float>(), p.data<float>() + p.numel(), before_[i].begin());
    }
  }
  void after_update(std::int64_t epoch, std::int64_t step, const nn::Trainer& trainer, double lr) {
    double grad_sq = 0, update_sq = 0;
    const auto grads = trainer.gradients();  // not changed by the update
    for (std::size_t i = 0; i < before_.size(); ++i) {
      const float* gv = grads[i].data<float>();
      for (std::int64_t j = 0; j < grads[i].numel(); ++j)
        grad_sq += static_cast<double>(gv[j]) * gv[j];
      const float* pv = store_.tensors()[i].data<float>();
      for (std::size_t j = 0; j < before_[i].size(); ++j) {
        const double d = static_cast<double>(pv[j]) - before_[i][j];
        update_sq += d * d;
      }
    }
    out_ << epoch << ',' << step + 1 << ',' << format_double(trainer.loss()) << ','
         << format_double(lr) << ',' << format_double(std::sqrt(grad_sq)) << ','
         << format_double(std::sqrt(update_sq)) << '\n';
  }
  void flush() {
    if (!enabled()) return;
    out_.flush();
    if (!out_) throw DataError(file_.string() + ": write failed");
  }

 private:
  std::filesystem::path file_;
  const nn::ParamStore& store_;
  std::ofstream out_;
  std::vector<std::vector<float>> before_;
};

}  // namespace tbgrad::mnist
