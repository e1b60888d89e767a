// libFuzzer target: the trainer against a plain whole-batch step (tests/random_net.hpp), on a
// network drawn from the input. Each byte is one choice of the generator (its batch size, each
// layer, the micro-batch sizes to test; zeros once the bytes run out), so every input is a
// valid network. A disagreement with the whole-batch step, a difference between thread or rank
// counts, an exception or a crash is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.hpp"
#include "tests/random_net.hpp"

#ifndef TBGRAD_FUZZ_ENTRY
#define TBGRAD_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int TBGRAD_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  using namespace tbgrad::testing;
  Choices choices = Choices::from_bytes({data, size});
  const RandomNet net = random_net(choices);
  DiffOptions options;
  options.micro_batches = micro_batches_for(net.batch, choices);
  options.threads = {1, 2};
  options.ranks = {2};
  const std::vector<std::string> bad = check_trainer(net, options);
  if (!bad.empty()) {
    std::string report = "the trainer disagrees with the whole-batch step on " + net.description;
    for (const std::string& line : bad) report += "  " + line + "\n";
    tbgrad_fuzz::die(report);
  }
  return 0;
}
