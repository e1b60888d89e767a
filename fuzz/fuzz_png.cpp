// libFuzzer target: the PNG reader of the image-folder data sets (read_png, read_image_folder).
//
// Input: byte 0 chooses the channels asked for (value % 5: 0 = as the file is, 1 to 4), byte 1
// the folder's layout (bit 0: a second class holding the same file); the rest is the PNG file.
// Expected failures are DataError naming the file or the folder. An image that reads must be
// within the size limits, its planes width * height * channels bytes, and the folder's data set
// consistent (the same image in both classes).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

#include "data/image_folder.hpp"
#include "fuzz/fuzz_util.hpp"

#ifndef TBGRAD_FUZZ_ENTRY
#define TBGRAD_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

namespace fs = std::filesystem;
using tbgrad_fuzz::check;

extern "C" int TBGRAD_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int channels = data[0] % 5;
  const bool two = (data[1] & 1) != 0;
  const fs::path root = tbgrad_fuzz::scratch_dir() / "png_folder";
  std::error_code ignored;
  fs::remove_all(root, ignored);
  fs::create_directories(root / "a");
  const auto file = tbgrad_fuzz::write_file("image.png", data + 2, size - 2);
  const fs::path in_a = root / "a" / "image.png";
  fs::copy_file(file, in_a);
  if (two) {
    fs::create_directories(root / "b");
    fs::copy_file(file, root / "b" / "image.png");
  }

  tbgrad::data::PngImage image;
  try {
    image = tbgrad::data::read_png(file, channels);
  } catch (const tbgrad::data::DataError& e) {
    tbgrad_fuzz::check_names_file(e.what(), file);
    // The folder fails the same way, naming its copy.
    try {
      tbgrad::data::read_image_folder(root, {.channels = channels});
    } catch (const tbgrad::data::DataError& f) {
      tbgrad_fuzz::check_names_file(f.what(), in_a);
      return 0;
    }
    tbgrad_fuzz::die("the folder read a file read_png refused");
  }
  check(image.width > 0 && image.height > 0, "empty image accepted");
  check(image.width <= tbgrad::data::kMaxPngSide && image.height <= tbgrad::data::kMaxPngSide,
        "image over the side limit accepted");
  check(int64_t{image.width} * image.height <= tbgrad::data::kMaxPngPixels,
        "image over the pixel limit accepted");
  check(image.channels >= 1 && image.channels <= 4, "channel count outside 1-4");
  check(channels == 0 || image.channels == channels, "not the channels asked for");
  check(image.pixels.size() == static_cast<size_t>(image.width) * static_cast<size_t>(image.height) *
                                   static_cast<size_t>(image.channels),
        "pixel count differs from width * height * channels");

  const tbgrad::data::ImageFolder folder = tbgrad::data::read_image_folder(root, {.channels = channels});
  const auto& d = folder.data;
  check(d.count == (two ? 2 : 1), "wrong image count");
  check(folder.classes.size() == static_cast<size_t>(d.count), "wrong class count");
  check(d.rows == image.height && d.cols == image.width && d.channels == image.channels,
        "the folder's image shape is not read_png's");
  check(d.images.size() == static_cast<size_t>(d.count) * image.pixels.size(), "wrong pixel bytes");
  check(std::equal(image.pixels.begin(), image.pixels.end(), d.images.begin()),
        "the folder's pixels are not read_png's");
  if (two) {
    check(std::equal(image.pixels.begin(), image.pixels.end(), d.images.begin() +
                     static_cast<std::ptrdiff_t>(image.pixels.size())),
          "the second class's copy reads differently");
    check(d.labels[0] == 0 && d.labels[1] == 1, "labels are not the classes in order");
  }
  return 0;
}
