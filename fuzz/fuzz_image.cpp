// libFuzzer target: the image reader of `tbgrad-mnist predict` (PNG and PGM) and the MNIST
// preprocessing after it.
//
// Input: the file. Expected failures are ImageError naming the file. An image that reads must
// be within the size limits, and its MNIST input 784 finite values in [0, 1].
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "apps/mnist/image.hpp"
#include "fuzz/fuzz_util.hpp"

#ifndef TBGRAD_FUZZ_ENTRY
#define TBGRAD_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

using tbgrad::mnist::ImageError;
using tbgrad_fuzz::check;

extern "C" int TBGRAD_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  const auto file = tbgrad_fuzz::write_file("digit", data, size);
  tbgrad::mnist::GrayImage image;
  try {
    image = tbgrad::mnist::read_image(file);
  } catch (const ImageError& e) {
    tbgrad_fuzz::check_names_file(e.what(), file);
    check(e.file() == file, "ImageError::file() is not the file");
    return 0;
  }
  check(image.width > 0 && image.height > 0, "empty image accepted");
  check(image.width <= tbgrad::mnist::kMaxImageSide && image.height <= tbgrad::mnist::kMaxImageSide,
        "image over the side limit accepted");
  check(static_cast<int64_t>(image.width) * image.height <= tbgrad::mnist::kMaxImagePixels,
        "image over the pixel limit accepted");
  check(image.pixels.size() == static_cast<size_t>(image.width) * static_cast<size_t>(image.height),
        "pixel count differs from width*height");
  const std::vector<float> input = tbgrad::mnist::to_mnist_input(image);
  check(input.size() == size_t{28} * 28, "MNIST input is not 784 values");
  for (float v : input) check(std::isfinite(v) && v >= 0.0f && v <= 1.0f, "MNIST input outside [0, 1]");
  return 0;
}
