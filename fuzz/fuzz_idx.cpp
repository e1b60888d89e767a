// libFuzzer target: the idx reader on raw (uncompressed) files.
//
// Input: byte 0 and byte 1 choose the image size the reader requires (0 means MNIST's 28, so
// the fuzzer can also make small valid files); the rest is the file, read both as images and
// as labels. Expected failures are DataError naming the file; anything else (a crash, a
// sanitizer report, another exception, a wrong result) is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "apps/mnist/idx.hpp"
#include "fuzz/fuzz_util.hpp"
#include "fuzz/idx_checks.hpp"

#ifndef TBGRAD_FUZZ_ENTRY
#define TBGRAD_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int TBGRAD_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int rows = data[0] == 0 ? 28 : data[0];
  const int cols = data[1] == 0 ? 28 : data[1];
  const size_t file_size = size - 2;
  const auto file = tbgrad_fuzz::write_file("train-images-idx3-ubyte", data + 2, file_size);

  tbgrad_fuzz::check_idx_readers(file, rows, cols, file_size);
  return 0;
}
