// Built against the installed package: the umbrella header, one header by its tbgrad/ path,
// the checkpoint API the umbrella must include, the training library's headers, and the old
// path of the communicator's header (dist/, now distributed/), kept for source compatibility.
#include <cstdio>
#include <tbgrad.hpp>
#include <tbgrad/data/dataset.hpp>
#include <tbgrad/dist/communicator.hpp>
#include <tbgrad/dist/mpi.hpp>
#include <tbgrad/graph/graph.hpp>
#include <tbgrad/nn/train.hpp>

int main() {
  tbgrad::Graph g(tbgrad::DType::kF64);
  auto w = g.param("w", {2, 3});
  auto x = g.input("x", {4, 3});
  auto loss = tbgrad::mean(tbgrad::tanh(tbgrad::linear(x, w)));
  tbgrad::nn::Rng rng(3);
  tbgrad::nn::xavier_uniform(g.value(w), rng);
  tbgrad::Tensor xv({4, 3}, tbgrad::DType::kF64);
  tbgrad::nn::uniform(xv, -1, 1, rng);
  auto result = tbgrad::gradcheck(loss, {w}, {{x, xv}});
  std::printf("%s", result.report().c_str());
  tbgrad::nn::Checkpoint ckpt;  // the checkpoint API comes with the umbrella header
  tbgrad::nn::TrainerOptions options{.batch_size = 8, .comm = &tbgrad::dist::single()};
  const bool ok = result.ok && ckpt.find("w") == nullptr && options.batch_size == 8 &&
                  options.comm->size() == 1;
  return ok ? 0 : 1;
}
