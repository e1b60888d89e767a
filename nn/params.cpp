#include "nn/params.hpp"

namespace tbgrad::nn {

const char* role_name(Role role) {
  switch (role) {
    case Role::kWeight:
      return "weight";
    case Role::kBias:
      return "bias";
    case Role::kNormScale:
      return "norm_scale";
    case Role::kNormShift:
      return "norm_shift";
  }
  return "?";
}

Value ParamStore::param(Graph& g, const std::string& name, Shape shape, DType dtype) {
  return param(g, name, shape, shape.rank() >= 2 ? Role::kWeight : Role::kBias, dtype);
}

Value ParamStore::param(Graph& g, const std::string& name, Shape shape, Role role, DType dtype) {
  if (find_buffer(name)) {
    throw Error("parameter " + name + ": the store has a buffer of that name");
  }
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
  roles_.push_back(role);
  return g.param(name, tensors_.back());
}

Role ParamStore::role(const std::string& name) const {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return roles_[i];
  }
  throw Error("ParamStore::role: the store has no parameter '" + name + "'");
}

Value ParamStore::buffer(Graph& g, const std::string& name, Shape shape, double init,
                         DType dtype) {
  if (dtype == DType::kI32) throw Error("buffer " + name + ": buffers must be floating point");
  if (find(name)) throw Error("buffer " + name + ": the store has a parameter of that name");
  for (std::size_t i = 0; i < buffer_names_.size(); ++i) {
    if (buffer_names_[i] != name) continue;
    if (!(buffers_[i].shape() == shape) || buffers_[i].dtype() != dtype) {
      throw Error("buffer " + name + " exists as " + buffers_[i].shape().str() + " " +
                  dtype_name(buffers_[i].dtype()) + ", requested as " + shape.str() + " " +
                  dtype_name(dtype));
    }
    return g.constant(buffers_[i], name);
  }
  buffer_names_.push_back(name);
  buffers_.emplace_back(shape, dtype);
  buffers_.back().fill(init);
  buffer_init_.push_back(init);
  return g.constant(buffers_.back(), name);
}

const Tensor* ParamStore::find_buffer(const std::string& name) const {
  for (std::size_t i = 0; i < buffer_names_.size(); ++i) {
    if (buffer_names_[i] == name) return &buffers_[i];
  }
  return nullptr;
}

void ParamStore::reset_buffers() const {
  for (std::size_t i = 0; i < buffers_.size(); ++i) buffers_[i].fill(buffer_init_[i]);
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
  for (std::size_t i = 0; i < store.tensors().size(); ++i) {
    const Tensor& t = store.tensors()[i];
    switch (store.roles()[i]) {
      case Role::kWeight:
        break;
      case Role::kBias:
      case Role::kNormShift:
        t.fill(0.0);
        continue;
      case Role::kNormScale:
        t.fill(1.0);
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
  store.reset_buffers();
}

}  // namespace tbgrad::nn
