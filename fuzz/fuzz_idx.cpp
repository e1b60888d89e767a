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

#ifndef TBGRAD_FUZZ_ENTRY
#define TBGRAD_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

using tbgrad::mnist::DataError;
using tbgrad_fuzz::check;

extern "C" int TBGRAD_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int rows = data[0] == 0 ? 28 : data[0];
  const int cols = data[1] == 0 ? 28 : data[1];
  const size_t file_size = size - 2;
  const auto file = tbgrad_fuzz::write_file("train-images-idx3-ubyte", data + 2, file_size);

  try {
    const tbgrad::mnist::IdxImages images = tbgrad::mnist::read_idx_images(file, rows, cols);
    check(images.count > 0, "images: zero count accepted");
    check(images.rows == rows && images.cols == cols, "images: size differs from the required");
    check(images.pixels.size() == static_cast<size_t>(images.count) * static_cast<size_t>(rows) *
                                      static_cast<size_t>(cols),
          "images: pixel count differs from count*rows*cols");
    check(file_size == 16 + images.pixels.size(), "images: file size differs from header+pixels");
  } catch (const DataError& e) {
    tbgrad_fuzz::check_names_file(e.what(), file);
  }

  try {
    const std::vector<uint8_t> labels = tbgrad::mnist::read_idx_labels(file);
    check(!labels.empty(), "labels: zero count accepted");
    check(file_size == 8 + labels.size(), "labels: file size differs from header+labels");
    for (uint8_t label : labels) check(label <= 9, "labels: label outside 0-9 accepted");
  } catch (const DataError& e) {
    tbgrad_fuzz::check_names_file(e.what(), file);
  }
  return 0;
}
