// Prints where a training step's time goes, op by op, for one model and batch size.
// Usage: profile_step [model] [batch] [threads] [steps] [nofuse]
// "nofuse" runs every ReLU as its own step (ExecutorOptions::fuse = false; Note [Epilogues] in
// graph/op.hpp); otherwise a fused step is listed as "producer+consumer".
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <tbgrad.hpp>

int main(int argc, char** argv) {
  using namespace tbgrad;
  const std::string model = argc > 1 ? argv[1] : "seed";
  const std::int64_t batch = argc > 2 ? std::atoll(argv[2]) : 32;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  const int steps = argc > 4 ? std::atoi(argv[4]) : 200;
  const bool fuse = !(argc > 5 && std::string(argv[5]) == "nofuse");
  set_num_threads(threads);
  Graph g;
  nn::ParamStore store;
  nn::Network net = nn::build_network(model, g, batch, store);
  nn::Rng rng(1);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  auto grads = grad(net.loss, net.params);
  Executor ex(g, {net.loss, net.logits, grads}, {.fuse = fuse});
  std::vector<Tensor> params(store.tensors().begin(), store.tensors().end());
  nn::SGD opt(params, 0.01);
  Tensor images({batch, 1, 28, 28}, DType::kF32), labels({batch}, DType::kI32);
  nn::uniform(images, 0, 1, rng);
  for (std::int64_t i = 0; i < batch; ++i) labels.set(i, static_cast<double>(i % 10));
  std::vector<Tensor> gv;
  for (Value v : grads) gv.push_back(ex[v]);
  ex.bind(net.images, images).bind(net.labels, labels);
  for (int i = 0; i < 20; ++i) ex.run();
  ex.set_profiling(true);
  auto cpu_seconds = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  };
  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) {
    ex.run();
    opt.step(gv);
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  std::map<std::string, double> by_op;
  double in_ops = 0;
  for (const auto& p : ex.profile()) {
    by_op[p.label()] += p.seconds;
    in_ops += p.seconds;
  }
  std::vector<std::pair<double, std::string>> sorted;
  for (auto& [k, v] : by_op) sorted.emplace_back(v, k);
  std::sort(sorted.rbegin(), sorted.rend());
  // CPU time is the steadier figure on a shared machine: waiting for a core does not count.
  std::printf("%s batch %lld threads %d: %.1f us/step wall, %.1f us/step CPU (%.0f images/s), ops %.1f us, arena %zu KiB\n",
              model.c_str(), static_cast<long long>(batch), threads, 1e6 * total / steps, 1e6 * cpu / steps,
              static_cast<double>(batch) * steps / total, 1e6 * in_ops / steps,
              ex.arena_bytes() / 1024);
  for (auto& [v, k] : sorted) std::printf("  %-32s %8.1f us  %5.1f%%\n", k.c_str(), 1e6 * v / steps, 100 * v / total);
  return 0;
}
