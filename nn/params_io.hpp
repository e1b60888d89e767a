// Checkpoints of any model: its parameters, by name, and its optimizer's state, in the
// safetensors layout of tbgrad/nn/checkpoint.hpp (docs/checkpoint-format.md).
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "tbgrad/nn/checkpoint.hpp"
#include "tbgrad/nn/optim.hpp"
#include "tbgrad/nn/params.hpp"

namespace tbgrad::nn {

// Adds every tensor of `store` (its parameters, then its buffers) under its name and, with an
// optimizer, its state tensors as "optimizer.<name>" and the metadata "optimizer" (its kind)
// and "optimizer_steps".
void add_to_checkpoint(Checkpoint& ckpt, const ParamStore& store,
                       const Optimizer* optimizer = nullptr);

// Fills every tensor of `store`, parameters and buffers (and, with an optimizer, its state and
// step count) from the tensors of the same names in `ckpt`. Throws CheckpointError naming `file` when one is missing
// or has another dtype or shape; the store may then be partly filled.
void load_from_checkpoint(const Checkpoint& ckpt, const std::filesystem::path& file,
                          const ParamStore& store, Optimizer* optimizer = nullptr);

// The two above with the file: save_parameters writes it atomically (save_checkpoint), with
// `metadata` added (a "model" key lets `tbgrad-mnist eval` load a checkpoint of one of its
// models); load_parameters returns the checkpoint read, for its metadata.
void save_parameters(const std::filesystem::path& file, const ParamStore& store,
                     const Optimizer* optimizer = nullptr,
                     const std::map<std::string, std::string>& metadata = {});
Checkpoint load_parameters(const std::filesystem::path& file, const ParamStore& store,
                           Optimizer* optimizer = nullptr);

}  // namespace tbgrad::nn
