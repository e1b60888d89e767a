#include "nn/params.hpp"

namespace tbgrad::nn {

Value ParamStore::param(Graph& g, const std::string& name, Shape shape, DType dtype) {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] != name) continue;
    if (!(tensors_[i].shape() == shape) || tensors_[i].dtype() != dtype) {
      throw Error("parameter " + name + " exists as " + tensors_[i].shape().str() +
                  ", requested as " + shape.str());
    }
    return g.param(name, tensors_[i]);
  }
  names_.push_back(name);
  tensors_.emplace_back(shape, dtype);
  return g.param(name, tensors_.back());
}

const Tensor* ParamStore::find(const std::string& name) const {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return &tensors_[i];
  }
  return nullptr;
}

std::int64_t ParamStore::count() const {
  std::int64_t n = 0;
  for (const Tensor& t : tensors_) n += t.numel();
  return n;
}

Init parse_init(const std::string& name) {
  if (name == "xavier") return Init::kXavierUniform;
  if (name == "he") return Init::kHeNormal;
  if (name == "uniform") return Init::kUniform;
  if (name == "normal") return Init::kNormal;
  throw Error("unknown initializer '" + name + "' (expected xavier, he, uniform or normal)");
}

const char* init_name(Init init) {
  switch (init) {
    case Init::kXavierUniform:
      return "xavier";
    case Init::kHeNormal:
      return "he";
    case Init::kUniform:
      return "uniform";
    case Init::kNormal:
      return "normal";
  }
  return "?";
}

void initialize(const ParamStore& store, Init init, Rng& rng) {
  for (const Tensor& t : store.tensors()) {
    if (t.shape().rank() < 2) {
      t.fill(0.0);
      continue;
    }
    switch (init) {
      case Init::kXavierUniform:
        xavier_uniform(t, rng);
        break;
      case Init::kHeNormal:
        he_normal(t, rng);
        break;
      case Init::kUniform:
        uniform(t, -1.0, 1.0, rng);
        break;
      case Init::kNormal:
        normal(t, 0.0, 1.0, rng);
        break;
    }
  }
}

}  // namespace tbgrad::nn
