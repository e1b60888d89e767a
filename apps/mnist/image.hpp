// Reading user-supplied digit images for `tbgrad-mnist predict` and turning
// them into the 28x28 input the MNIST model was trained on.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace tbgrad::mnist {

// Any failure to read an image. what() names the file and the problem.
class ImageError : public std::runtime_error {
 public:
  ImageError(const std::filesystem::path& file, std::string_view problem);

  const std::filesystem::path& file() const noexcept { return file_; }

 private:
  std::filesystem::path file_;
};

// An 8-bit greyscale image, row-major, 0 = black, 255 = white.
struct GrayImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// Images larger than this in either side, or in total pixels, are refused
// before any pixel memory is allocated.
inline constexpr int kMaxImageSide = 16384;
inline constexpr int64_t kMaxImagePixels = int64_t{64} * 1024 * 1024;

// Reads a PNG (any bit depth or colour type; colour becomes luminance,
// transparency is composited onto white) or a PGM (P5 binary or P2 ASCII,
// maxval 1..65535) as 8-bit grey. The format is detected from the file's
// first bytes, not its name. Throws ImageError for anything else, including
// truncated files and dimensions over the limits above.
GrayImage read_image(const std::filesystem::path& file);

// MNIST preprocessing: returns 28*28 floats in [0, 1], row-major, white digit
// on black. A light background is inverted first. An image that is already
// 28x28 is only scaled to [0, 1] (pixel / 255), so an MNIST digit saved as a
// PNG round-trips exactly. Any other image is cropped to the digit's bounding
// box, contrast-stretched, resized with area averaging so its longer side is
// 20 pixels, and placed in a 28x28 frame with its centre of mass at (14, 14).
// A blank image gives all zeros.
std::vector<float> to_mnist_input(const GrayImage& img);

}  // namespace tbgrad::mnist
