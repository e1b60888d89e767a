#include "apps/mnist/image.hpp"

#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>

namespace tbgrad::mnist {
namespace {

// The largest file read_image will load into memory. An ASCII PGM at the
// pixel limit with 16-bit samples ("65535 " per pixel) needs 384 MiB.
constexpr uint64_t kMaxFileBytes = uint64_t{512} * 1024 * 1024;

// The IEND chunk: zero length, type, CRC.
constexpr std::array<unsigned char, 12> kPngEnd = {0,   0,   0,    0,    'I',  'E',
                                                   'N', 'D', 0xAE, 0x42, 0x60, 0x82};
constexpr std::array<unsigned char, 8> kPngSignature = {0x89, 'P',  'N',  'G',
                                                        '\r', '\n', 0x1A, '\n'};

std::string errno_message(int err) {
  return std::system_category().message(err);
}

// Refuses dimensions over the limits; called with the header's numbers
// before any pixel buffer exists.
void check_dimensions(const std::filesystem::path& file, uint64_t width, uint64_t height) {
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  if (width == 0 || height == 0) throw ImageError(file, "image is " + size + ", which is empty");
  if (width > kMaxImageSide || height > kMaxImageSide) {
    throw ImageError(file, "image is " + size + ", larger than the " +
                               std::to_string(kMaxImageSide) + "x" + std::to_string(kMaxImageSide) +
                               " limit");
  }
  if (width * height > static_cast<uint64_t>(kMaxImagePixels)) {
    throw ImageError(file, "image is " + size + " (" + std::to_string(width * height) +
                               " pixels), more than the " + std::to_string(kMaxImagePixels) +
                               "-pixel limit");
  }
}

std::vector<unsigned char> read_whole_file(const std::filesystem::path& file) {
  // O_NONBLOCK so that a FIFO is refused below instead of blocking the open.
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw ImageError(file, "cannot open: " + errno_message(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat info {};
  if (::fstat(fd, &info) != 0) throw ImageError(file, "cannot stat: " + errno_message(errno));
  if (S_ISDIR(info.st_mode)) throw ImageError(file, "is a directory, not an image file");
  if (!S_ISREG(info.st_mode)) throw ImageError(file, "is not a regular file");
  const uint64_t size = static_cast<uint64_t>(info.st_size);
  if (size == 0) throw ImageError(file, "file is empty");
  if (size > kMaxFileBytes) {
    throw ImageError(file, "file is " + std::to_string(size) + " bytes, more than the " +
                               std::to_string(kMaxFileBytes >> 20) + " MiB limit");
  }
  std::vector<unsigned char> bytes(size);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t got = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw ImageError(file, "read failed: " + errno_message(errno));
    }
    if (got == 0) throw ImageError(file, "file shrank while being read");
    done += static_cast<size_t>(got);
  }
  return bytes;
}

// ---------------------------------------------------------------- PNG

// Walks the chunk layout before libpng sees the file: every chunk's declared
// length must fit in the bytes that follow it, and the walk must reach the
// (always identical) 12-byte IEND chunk.
// - libpng allocates a chunk's buffer from its declared length before reading
//   the data, and Debian's build does so for an sPLT chunk of any length up to
//   2^31 - 1: a 63-byte file declaring a 512 MiB chunk made it allocate 512 MiB
//   (found by fuzz_image). After this walk, no chunk is larger than the file.
// - libpng stops reading once it has the pixels, so a file cut off inside or
//   before its IEND chunk would load; such a file is still truncated.
// Bytes after IEND (some tools append junk) are ignored, as libpng does.
void check_png_chunks(const std::filesystem::path& file, const std::vector<unsigned char>& bytes) {
  constexpr uint64_t kMaxChunkLength = 0x7FFFFFFF;  // PNG spec: lengths are below 2^31.
  uint64_t at = kPngSignature.size();
  for (;;) {
    const uint64_t left = bytes.size() - at;
    if (left < 8) {
      throw ImageError(file, "truncated PNG: the file ends at byte " + std::to_string(bytes.size()) +
                                 " without its final IEND chunk");
    }
    const unsigned char* header = bytes.data() + at;
    const uint64_t length = (uint64_t{header[0]} << 24) | (uint64_t{header[1]} << 16) |
                            (uint64_t{header[2]} << 8) | uint64_t{header[3]};
    const std::string type(reinterpret_cast<const char*>(header) + 4, 4);
    const auto is_letter = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); };
    if (!std::all_of(type.begin(), type.end(), is_letter)) {
      throw ImageError(file, "invalid PNG: the chunk at byte " + std::to_string(at) +
                                 " has a type that is not four ASCII letters");
    }
    if (length > kMaxChunkLength) {
      throw ImageError(file, "invalid PNG: chunk '" + type + "' at byte " + std::to_string(at) +
                                 " declares " + std::to_string(length) +
                                 " bytes, more than PNG allows (2^31 - 1)");
    }
    // Data and the 4-byte CRC after the 8-byte header.
    if (length + 4 > left - 8) {
      throw ImageError(file, "truncated PNG: chunk '" + type + "' at byte " + std::to_string(at) +
                                 " declares " + std::to_string(length) +
                                 " bytes of data, but the file has " +
                                 std::to_string(left - 8) + " bytes after its header");
    }
    if (type == "IEND") {
      if (!std::equal(kPngEnd.begin(), kPngEnd.end(), header)) {
        throw ImageError(file, "invalid PNG: the IEND chunk at byte " + std::to_string(at) +
                                   " is not the standard empty chunk with its checksum");
      }
      return;
    }
    at += 8 + length + 4;
  }
}

// Uses libpng's simplified API: it converts every bit depth and colour type
// to 8-bit grey for us, and it keeps libpng's setjmp/longjmp error handling
// inside C code, reporting failure through a return value and a message, so
// no longjmp ever crosses a C++ frame.
GrayImage decode_png(const std::filesystem::path& file, const std::vector<unsigned char>& bytes) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  // Frees libpng's state on every path; harmless after png_image_finish_read,
  // which frees it itself and clears image.opaque.
  struct ImageFreer {
    png_image* image;
    ~ImageFreer() { png_image_free(image); }
  } freer{&image};

  check_png_chunks(file, bytes);
  if (png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()) == 0) {
    throw ImageError(file, std::string("invalid PNG: ") + image.message);
  }
  check_dimensions(file, image.width, image.height);

  image.format = PNG_FORMAT_GRAY;
  // Without a gAMA/sRGB chunk libpng would take 16-bit samples as linear
  // light and gamma-encode them on the way to 8 bits; image editors (and our
  // PGM reader) treat them like 8-bit ones, just finer, so say so.
  image.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
  GrayImage result;
  result.width = static_cast<int>(image.width);
  result.height = static_cast<int>(image.height);
  result.pixels.resize(static_cast<size_t>(image.width) * image.height);
  // Transparent areas become white paper, so a dark digit drawn on a
  // transparent canvas reads the way it looks in a viewer.
  const png_color white = {255, 255, 255};
  if (png_image_finish_read(&image, &white, result.pixels.data(), 0, nullptr) == 0) {
    throw ImageError(file, std::string("invalid PNG: ") + image.message);
  }
  return result;
}

// ---------------------------------------------------------------- PGM
//
// A small strict parser instead of libnetpbm: netpbm's readers report errors
// by calling exit() (or by longjmp through a handler, which would skip C++
// destructors), and they size their allocations from the header without our
// limits. stb_image, the other packaged option, does not read ASCII (P2) PGM.

class PgmParser {
 public:
  PgmParser(const std::filesystem::path& file, const std::vector<unsigned char>& bytes)
      : file_(file), bytes_(bytes) {}

  GrayImage parse() {
    const bool ascii = bytes_[1] == '2';
    pos_ = 2;  // Past the magic number, checked by the caller.
    const uint64_t width = header_number("width");
    const uint64_t height = header_number("height");
    const uint64_t maxval = header_number("maxval");
    check_dimensions(file_, width, height);
    if (maxval == 0 || maxval > 65535) {
      throw ImageError(file_,
                       "PGM maxval " + std::to_string(maxval) + " is invalid (must be 1 to 65535)");
    }
    maxval_ = maxval;
    // Exactly one whitespace byte separates maxval from a binary raster (the
    // raster may itself start with bytes that look like whitespace); the
    // format allows a comment before that byte.
    if (pos_ < bytes_.size() && bytes_[pos_] == '#') {
      while (pos_ < bytes_.size() && bytes_[pos_] != '\n' && bytes_[pos_] != '\r') ++pos_;
    }
    if (pos_ >= bytes_.size() || !is_space(bytes_[pos_])) fail_truncated("after maxval");
    ++pos_;

    GrayImage image;
    image.width = static_cast<int>(width);
    image.height = static_cast<int>(height);
    const size_t pixel_count = static_cast<size_t>(width * height);
    if (!ascii) {
      const size_t sample_bytes = maxval < 256 ? 1 : 2;
      const size_t needed = pixel_count * sample_bytes;
      const size_t available = bytes_.size() - pos_;
      // Checked before allocating, so a lying header costs nothing.
      if (available < needed) {
        throw ImageError(file_, "truncated PGM: pixel data is " + std::to_string(available) +
                                    " bytes, the header promises " + std::to_string(needed));
      }
      image.pixels.resize(pixel_count);
      for (size_t i = 0; i < pixel_count; ++i) {
        const unsigned char* sample = bytes_.data() + pos_ + i * sample_bytes;
        // 16-bit samples are big-endian.
        const uint64_t value =
            sample_bytes == 1 ? sample[0] : (uint64_t{sample[0]} << 8) | sample[1];
        image.pixels[i] = to_8bit(value);
      }
    } else {
      // Every sample takes at least two bytes ("0 "), except perhaps the last;
      // a file too short for that is truncated, so fail before allocating.
      if (bytes_.size() - pos_ + 1 < 2 * pixel_count) {
        throw ImageError(file_, "truncated PGM: " + std::to_string(bytes_.size() - pos_) +
                                    " bytes cannot hold " + std::to_string(pixel_count) +
                                    " ASCII samples");
      }
      image.pixels.resize(pixel_count);
      for (size_t i = 0; i < pixel_count; ++i) {
        skip_space_and_comments();
        if (pos_ >= bytes_.size()) {
          throw ImageError(file_, "truncated PGM: found " + std::to_string(i) + " of " +
                                      std::to_string(pixel_count) + " samples");
        }
        image.pixels[i] = to_8bit(number("sample"));
      }
    }
    // Anything after the raster is ignored: netpbm streams may hold several
    // images, and we read the first.
    return image;
  }

 private:
  static bool is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
  }

  [[noreturn]] void fail_truncated(const std::string& where) {
    throw ImageError(file_, "truncated or malformed PGM header " + where);
  }

  void skip_space_and_comments() {
    while (pos_ < bytes_.size()) {
      if (is_space(bytes_[pos_])) {
        ++pos_;
      } else if (bytes_[pos_] == '#') {
        while (pos_ < bytes_.size() && bytes_[pos_] != '\n' && bytes_[pos_] != '\r') ++pos_;
      } else {
        break;
      }
    }
  }

  uint64_t header_number(const std::string& name) {
    const size_t before = pos_;
    skip_space_and_comments();
    if (pos_ == before) fail_truncated("before " + name);  // Tokens need a separator.
    if (pos_ >= bytes_.size()) fail_truncated("(file ends before " + name + ")");
    return number(name);
  }

  // A decimal number that must be followed by whitespace, a comment or the
  // end of the file. Values are capped rather than overflowing, so absurd
  // headers still produce a readable message.
  uint64_t number(const std::string& name) {
    constexpr uint64_t kCap = 1'000'000'000'000;
    if (pos_ >= bytes_.size() || bytes_[pos_] < '0' || bytes_[pos_] > '9') {
      throw ImageError(file_, "malformed PGM: expected a number for " + name + " at byte " +
                                  std::to_string(pos_));
    }
    uint64_t value = 0;
    while (pos_ < bytes_.size() && bytes_[pos_] >= '0' && bytes_[pos_] <= '9') {
      value = std::min(kCap, value * 10 + static_cast<uint64_t>(bytes_[pos_] - '0'));
      ++pos_;
    }
    if (pos_ < bytes_.size() && !is_space(bytes_[pos_]) && bytes_[pos_] != '#') {
      throw ImageError(file_, "malformed PGM: unexpected character after " + name + " at byte " +
                                  std::to_string(pos_));
    }
    return value;
  }

  uint8_t to_8bit(uint64_t value) const {
    if (value > maxval_) {
      throw ImageError(file_, "PGM sample " + std::to_string(value) + " exceeds maxval " +
                                  std::to_string(maxval_));
    }
    return static_cast<uint8_t>((value * 255 + maxval_ / 2) / maxval_);  // Rounded.
  }

  const std::filesystem::path& file_;
  const std::vector<unsigned char>& bytes_;
  size_t pos_ = 0;
  uint64_t maxval_ = 1;
};

// ---------------------------------------------------------------- MNIST

constexpr int kMnistSide = 28;
constexpr int kDigitBox = 20;  // MNIST digits fit a 20x20 box inside the 28x28 frame.
constexpr double kCentre = 14.0;
// Pixels brighter than this fraction of the way from background to the
// brightest pixel count as ink when finding the digit's bounding box.
constexpr float kInkThreshold = 0.2f;

// Weights for resampling one axis from `from` to `to` pixels by area
// averaging: output pixel i is the mean of the input interval
// [i*from/to, (i+1)*from/to), partial input pixels weighted by coverage.
struct Tap {
  int source;
  float weight;
};

std::vector<std::vector<Tap>> box_filter_taps(int from, int to) {
  std::vector<std::vector<Tap>> taps(static_cast<size_t>(to));
  const double scale = static_cast<double>(from) / to;
  for (int i = 0; i < to; ++i) {
    const double begin = i * scale;
    const double end = (i + 1) * scale;
    for (int s = static_cast<int>(std::floor(begin)); s < from && s < end; ++s) {
      const double overlap = std::min(end, s + 1.0) - std::max(begin, static_cast<double>(s));
      if (overlap > 0)
        taps[static_cast<size_t>(i)].push_back({s, static_cast<float>(overlap / scale)});
    }
  }
  return taps;
}

}  // namespace

ImageError::ImageError(const std::filesystem::path& file, std::string_view problem)
    : std::runtime_error("image '" + file.string() + "': " + std::string(problem)), file_(file) {}

GrayImage read_image(const std::filesystem::path& file) {
  const std::vector<unsigned char> bytes = read_whole_file(file);
  if (bytes.size() >= kPngSignature.size() &&
      std::equal(kPngSignature.begin(), kPngSignature.end(), bytes.begin())) {
    return decode_png(file, bytes);
  }
  if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] >= '1' && bytes[1] <= '7') {
    if (bytes[1] == '2' || bytes[1] == '5') return PgmParser(file, bytes).parse();
    throw ImageError(file, std::string("netpbm format P") + static_cast<char>(bytes[1]) +
                               " is not supported (only PGM: P2 and P5); convert it to PNG or PGM");
  }
  throw ImageError(file, "not a PNG or PGM image (unrecognised file signature)");
}

std::vector<float> to_mnist_input(const GrayImage& img) {
  if (img.width <= 0 || img.height <= 0 ||
      img.pixels.size() != static_cast<size_t>(img.width) * static_cast<size_t>(img.height)) {
    throw std::invalid_argument("to_mnist_input: image size does not match its pixel count");
  }
  const size_t pixel_count = img.pixels.size();

  // MNIST digits are white on black; a mostly light image is paper with ink.
  uint64_t sum = 0;
  for (uint8_t p : img.pixels) sum += p;
  const bool invert = sum > 127 * static_cast<uint64_t>(pixel_count);
  std::vector<uint8_t> ink(img.pixels);
  if (invert) {
    for (uint8_t& p : ink) p = static_cast<uint8_t>(255 - p);
  }

  std::vector<float> output(size_t{kMnistSide} * kMnistSide, 0.0f);
  if (img.width == kMnistSide && img.height == kMnistSide) {
    // Already MNIST-shaped: keep it as is, so exported MNIST digits
    // round-trip exactly.
    for (size_t i = 0; i < pixel_count; ++i) output[i] = ink[i] / 255.0f;
    return output;
  }

  // Background level: the median, since the digit normally covers a minority
  // of the pixels. Stretching from it to the brightest pixel removes paper
  // texture and makes faint pencil as bright as MNIST's strokes.
  std::array<size_t, 256> histogram{};
  for (uint8_t p : ink) ++histogram[p];
  int background = 0;
  for (size_t seen = 0; background < 255; ++background) {
    seen += histogram[static_cast<size_t>(background)];
    if (2 * seen >= pixel_count) break;
  }
  const int brightest = *std::max_element(ink.begin(), ink.end());
  if (brightest <= background) return output;  // Blank: no digit to find.
  const float range = static_cast<float>(brightest - background);
  auto stretched = [&](int x, int y) {
    const int value =
        ink[static_cast<size_t>(y) * static_cast<size_t>(img.width) + static_cast<size_t>(x)];
    return std::max(0.0f, static_cast<float>(value - background) / range);
  };

  // Bounding box of the ink.
  int left = img.width, right = -1, top = img.height, bottom = -1;
  for (int y = 0; y < img.height; ++y) {
    for (int x = 0; x < img.width; ++x) {
      if (stretched(x, y) > kInkThreshold) {
        left = std::min(left, x);
        right = std::max(right, x);
        top = std::min(top, y);
        bottom = std::max(bottom, y);
      }
    }
  }
  const int crop_width = right - left + 1;
  const int crop_height = bottom - top + 1;

  // Longer side to 20 pixels, aspect ratio kept.
  const int longer = std::max(crop_width, crop_height);
  const int box_width = std::max(
      1, static_cast<int>(std::lround(static_cast<double>(crop_width) * kDigitBox / longer)));
  const int box_height = std::max(
      1, static_cast<int>(std::lround(static_cast<double>(crop_height) * kDigitBox / longer)));
  const auto column_taps = box_filter_taps(crop_width, box_width);
  const auto row_taps = box_filter_taps(crop_height, box_height);

  // Separable: filter rows horizontally, then the result vertically.
  std::vector<float> narrowed(static_cast<size_t>(crop_height) * box_width, 0.0f);
  for (int y = 0; y < crop_height; ++y) {
    for (int x = 0; x < box_width; ++x) {
      float value = 0;
      for (const Tap& tap : column_taps[static_cast<size_t>(x)]) {
        value += tap.weight * stretched(left + tap.source, top + y);
      }
      narrowed[static_cast<size_t>(y) * box_width + x] = value;
    }
  }
  std::vector<float> digit(static_cast<size_t>(box_height) * box_width, 0.0f);
  double mass = 0, mass_x = 0, mass_y = 0;
  for (int y = 0; y < box_height; ++y) {
    for (int x = 0; x < box_width; ++x) {
      float value = 0;
      for (const Tap& tap : row_taps[static_cast<size_t>(y)]) {
        value += tap.weight * narrowed[static_cast<size_t>(tap.source) * box_width + x];
      }
      value = std::clamp(value, 0.0f, 1.0f);  // Rounding can overshoot by an ulp.
      digit[static_cast<size_t>(y) * box_width + x] = value;
      mass += value;
      mass_x += value * x;
      mass_y += value * y;
    }
  }

  // Shift so the centre of mass lands on (14, 14), but never so far that
  // part of the digit leaves the frame: a cut-off stroke hurts more than a
  // slightly off-centre one.
  const auto offset = [&](double centre_of_mass, int extent) {
    const long wanted = std::lround(kCentre - centre_of_mass);
    return static_cast<int>(std::clamp<long>(wanted, 0, kMnistSide - extent));
  };
  const int offset_x = offset(mass > 0 ? mass_x / mass : (box_width - 1) / 2.0, box_width);
  const int offset_y = offset(mass > 0 ? mass_y / mass : (box_height - 1) / 2.0, box_height);
  for (int y = 0; y < box_height; ++y) {
    for (int x = 0; x < box_width; ++x) {
      output[static_cast<size_t>(y + offset_y) * kMnistSide + static_cast<size_t>(x + offset_x)] =
          digit[static_cast<size_t>(y) * box_width + x];
    }
  }
  return output;
}

}  // namespace tbgrad::mnist
