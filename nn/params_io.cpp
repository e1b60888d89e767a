#include "nn/params_io.hpp"

#include <cstring>
#include <span>

namespace tbgrad::nn {
namespace {

CheckpointTensor to_checkpoint(const std::string& name, const Tensor& t) {
  CheckpointTensor c;
  c.name = name;
  c.dtype = t.dtype() == DType::kF64 ? "F64" : "F32";
  for (std::int64_t d : t.shape().dims()) c.shape.push_back(d);
  c.data.resize(t.nbytes());
  if (t.nbytes()) std::memcpy(c.data.data(), t.raw(), t.nbytes());
  return c;
}

void from_checkpoint(const Checkpoint& ckpt, const std::filesystem::path& file,
                     const std::string& name, const Tensor& dst) {
  const CheckpointTensor* c = ckpt.find(name);
  if (!c) throw CheckpointError(file, "checkpoint has no tensor '" + name + "'");
  const Shape shape{std::span<const std::int64_t>(c->shape)};
  const char* want = dst.dtype() == DType::kF64 ? "F64" : "F32";
  if (c->dtype != want || !(shape == dst.shape())) {
    throw CheckpointError(file, "tensor '" + name + "' is " + c->dtype + " " + shape.str() +
                                    ", the model needs " + want + " " + dst.shape().str());
  }
  std::memcpy(dst.raw(), c->data.data(), dst.nbytes());
}

}  // namespace

void add_to_checkpoint(Checkpoint& ckpt, const ParamStore& store, const Optimizer* optimizer) {
  for (std::size_t i = 0; i < store.names().size(); ++i) {
    ckpt.tensors.push_back(to_checkpoint(store.names()[i], store.tensors()[i]));
  }
  for (std::size_t i = 0; i < store.buffer_names().size(); ++i) {
    ckpt.tensors.push_back(to_checkpoint(store.buffer_names()[i], store.buffers()[i]));
  }
  if (!optimizer) return;
  for (const auto& [name, t] : optimizer->state()) {
    ckpt.tensors.push_back(to_checkpoint("optimizer." + name, t));
  }
  ckpt.metadata["optimizer"] = optimizer->name();
  ckpt.metadata["optimizer_steps"] = std::to_string(optimizer->steps());
}

void load_from_checkpoint(const Checkpoint& ckpt, const std::filesystem::path& file,
                          const ParamStore& store, Optimizer* optimizer) {
  for (std::size_t i = 0; i < store.names().size(); ++i) {
    from_checkpoint(ckpt, file, store.names()[i], store.tensors()[i]);
  }
  for (std::size_t i = 0; i < store.buffer_names().size(); ++i) {
    from_checkpoint(ckpt, file, store.buffer_names()[i], store.buffers()[i]);
  }
  if (!optimizer) return;
  for (const auto& [name, t] : optimizer->state()) {
    from_checkpoint(ckpt, file, "optimizer." + name, t);
  }
  auto it = ckpt.metadata.find("optimizer_steps");
  if (it == ckpt.metadata.end())
    throw CheckpointError(file, "checkpoint metadata lacks 'optimizer_steps'");
  const std::string& s = it->second;
  std::size_t used = 0;
  long long steps = -1;
  try {
    steps = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || steps < 0) {
    throw CheckpointError(
        file, "checkpoint metadata 'optimizer_steps' = '" + s + "' is not a non-negative integer");
  }
  optimizer->set_steps(steps);
}

void save_parameters(const std::filesystem::path& file, const ParamStore& store,
                     const Optimizer* optimizer,
                     const std::map<std::string, std::string>& metadata) {
  Checkpoint ckpt;
  ckpt.metadata = metadata;
  add_to_checkpoint(ckpt, store, optimizer);
  save_checkpoint(file, ckpt);
}

Checkpoint load_parameters(const std::filesystem::path& file, const ParamStore& store,
                           Optimizer* optimizer) {
  Checkpoint ckpt = load_checkpoint(file);
  load_from_checkpoint(ckpt, file, store, optimizer);
  return ckpt;
}

}  // namespace tbgrad::nn
