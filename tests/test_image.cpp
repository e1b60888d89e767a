#include <gtest/gtest.h>
#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>
#include <vector>

#include "apps/mnist/image.hpp"

// Records the largest single allocation made through operator new, so tests
// can prove that a header announcing a huge image is refused before any
// buffer of that size is requested. (libpng allocates with malloc, but the
// only large libpng buffer is the pixel buffer, which read_image sizes itself
// after the dimension check.) noinline keeps GCC from pairing the inlined
// malloc/free with new/delete expressions and warning about a mismatch.
namespace {
std::atomic<size_t> largest_allocation{0};
}  // namespace

__attribute__((noinline)) void* operator new(size_t size) {
  size_t seen = largest_allocation.load(std::memory_order_relaxed);
  while (size > seen && !largest_allocation.compare_exchange_weak(seen, size)) {
  }
  if (void* memory = std::malloc(size == 0 ? 1 : size)) return memory;
  throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* memory) noexcept {
  std::free(memory);
}
__attribute__((noinline)) void operator delete(void* memory, size_t) noexcept {
  std::free(memory);
}

namespace tbgrad::mnist {
namespace {

namespace fs = std::filesystem;

void write_bytes(const fs::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << file;
}

std::string read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Writes an 8-bit PNG with libpng's simplified write API. `format` is a
// PNG_FORMAT_* constant; `pixels` holds width*height*channels bytes.
void write_png(const fs::path& file, int width, int height, uint32_t format,
               const std::vector<uint8_t>& pixels) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = format;
  ASSERT_EQ(pixels.size(), PNG_IMAGE_SIZE(image));
  ASSERT_NE(png_image_write_to_file(&image, file.c_str(), 0, pixels.data(), 0, nullptr), 0)
      << image.message;
}

// Builds a PNG chunk by chunk, for what the simplified writer cannot make:
// 16-bit and 1-bit greyscale, palettes, and deliberately absurd headers.
// `rows` is the unfiltered raster: each row is a filter byte (0) + samples.
void append_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

void append_chunk(std::string& png, const std::string& type, const std::string& data) {
  append_u32(png, static_cast<uint32_t>(data.size()));
  const std::string body = type + data;
  png += body;
  append_u32(png, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()),
                                              static_cast<uInt>(body.size()))));
}

std::string build_png(uint32_t width, uint32_t height, int bit_depth, int color_type,
                      const std::string& rows, const std::string& palette = "") {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  std::string header;
  append_u32(header, width);
  append_u32(header, height);
  header += {static_cast<char>(bit_depth), static_cast<char>(color_type), 0, 0, 0};
  append_chunk(png, "IHDR", header);
  if (!palette.empty()) append_chunk(png, "PLTE", palette);
  uLongf compressed_size = compressBound(rows.size());
  std::string compressed(compressed_size, '\0');
  EXPECT_EQ(compress(reinterpret_cast<Bytef*>(compressed.data()), &compressed_size,
                     reinterpret_cast<const Bytef*>(rows.data()), rows.size()),
            Z_OK);
  compressed.resize(compressed_size);
  append_chunk(png, "IDAT", compressed);
  append_chunk(png, "IEND", "");
  return png;
}

// A 28x28 MNIST-like "0": a bright anti-aliased ring on black.
std::vector<uint8_t> mnist_like_digit() {
  std::vector<uint8_t> pixels(size_t{28} * 28);
  for (int y = 0; y < 28; ++y) {
    for (int x = 0; x < 28; ++x) {
      const double radius = std::hypot(x - 13.5, (y - 13.5) * 0.8);
      const double value = 255.0 * std::max(0.0, 1.0 - std::abs(radius - 8.0) / 2.5);
      pixels[static_cast<size_t>(y) * 28 + static_cast<size_t>(x)] = static_cast<uint8_t>(value);
    }
  }
  return pixels;
}

struct CentreOfMass {
  double x, y, mass;
};

CentreOfMass centre_of_mass(const std::vector<float>& input) {
  CentreOfMass com{0, 0, 0};
  for (int y = 0; y < 28; ++y) {
    for (int x = 0; x < 28; ++x) {
      const float value = input[static_cast<size_t>(y) * 28 + static_cast<size_t>(x)];
      com.x += value * x;
      com.y += value * y;
      com.mass += value;
    }
  }
  com.x /= com.mass;
  com.y /= com.mass;
  return com;
}

// Checks that reading `file` throws ImageError naming the file and
// containing `expected`.
void expect_image_error(const fs::path& file, const std::string& expected) {
  try {
    read_image(file);
    ADD_FAILURE() << "read_image(" << file << ") did not throw; expected: " << expected;
  } catch (const ImageError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(file.string()), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos)
        << "message: " << message << "\nexpected to contain: " << expected;
    EXPECT_EQ(error.file(), file);
  }
}

class ImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tbgrad_image_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  fs::path dir_;
};

TEST(AllocationTrackerTest, SeesLargeAllocations) {
  // Guards the "refused before allocating" checks below against a tracker
  // that silently stopped working (e.g. a sanitizer's operator new winning).
  largest_allocation = 0;
  std::vector<char> buffer(size_t{4} << 20);
  EXPECT_GE(largest_allocation.load(), buffer.size());
}

// ------------------------------------------------------------ PNG reading

TEST_F(ImageTest, ReadsGrayPng) {
  const std::vector<uint8_t> pixels = {0, 1, 2, 127, 128, 200, 254, 255, 17, 99, 42, 3, 4, 5, 6};
  write_png(dir_ / "gray.png", 5, 3, PNG_FORMAT_GRAY, pixels);
  const GrayImage image = read_image(dir_ / "gray.png");
  EXPECT_EQ(image.width, 5);
  EXPECT_EQ(image.height, 3);
  EXPECT_EQ(image.pixels, pixels);
}

TEST_F(ImageTest, MnistDigitPngRoundTripsExactly) {
  const std::vector<uint8_t> pixels = mnist_like_digit();
  write_png(dir_ / "digit.png", 28, 28, PNG_FORMAT_GRAY, pixels);
  const GrayImage image = read_image(dir_ / "digit.png");
  ASSERT_EQ(image.pixels, pixels);
  const std::vector<float> input = to_mnist_input(image);
  ASSERT_EQ(input.size(), 784u);
  for (size_t i = 0; i < input.size(); ++i) {
    ASSERT_EQ(input[i], pixels[i] / 255.0f) << "pixel " << i;
  }
}

TEST_F(ImageTest, ColourPngBecomesLuminance) {
  // Black, white, red, green, blue.
  const std::vector<uint8_t> pixels = {0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255};
  write_png(dir_ / "rgb.png", 5, 1, PNG_FORMAT_RGB, pixels);
  const GrayImage image = read_image(dir_ / "rgb.png");
  ASSERT_EQ(image.pixels.size(), 5u);
  EXPECT_EQ(image.pixels[0], 0);
  EXPECT_EQ(image.pixels[1], 255);
  // Perceived brightness: green > red > blue, none black or white.
  EXPECT_GT(image.pixels[3], image.pixels[2]);
  EXPECT_GT(image.pixels[2], image.pixels[4]);
  EXPECT_GT(image.pixels[4], 0);
  EXPECT_LT(image.pixels[3], 255);
}

TEST_F(ImageTest, TransparencyIsCompositedOntoWhite) {
  // Opaque black, fully transparent black, opaque white.
  const std::vector<uint8_t> pixels = {0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255};
  write_png(dir_ / "rgba.png", 3, 1, PNG_FORMAT_RGBA, pixels);
  EXPECT_EQ(read_image(dir_ / "rgba.png").pixels, (std::vector<uint8_t>{0, 255, 255}));
}

TEST_F(ImageTest, SixteenBitGrayPngIsScaledLinearly) {
  std::string rows;
  rows += '\0';
  for (uint16_t sample : {0, 65535, 32896, 257}) {  // 32896 = 128 * 257.
    rows += static_cast<char>(sample >> 8);
    rows += static_cast<char>(sample & 0xFF);
  }
  write_bytes(dir_ / "gray16.png", build_png(4, 1, 16, 0, rows));
  EXPECT_EQ(read_image(dir_ / "gray16.png").pixels, (std::vector<uint8_t>{0, 255, 128, 1}));
}

TEST_F(ImageTest, OneBitAndPalettePngs) {
  // 1-bit grey, 10 pixels: 1010110000 (two bytes, padded).
  write_bytes(dir_ / "bits.png", build_png(10, 1, 1, 0, std::string("\0\xAC\x00", 3)));
  EXPECT_EQ(read_image(dir_ / "bits.png").pixels,
            (std::vector<uint8_t>{255, 0, 255, 0, 255, 255, 0, 0, 0, 0}));

  // 2-bit palette of black and white.
  const std::string palette("\x00\x00\x00\xFF\xFF\xFF", 6);
  write_bytes(dir_ / "palette.png", build_png(4, 1, 2, 3, std::string("\0\x11", 2), palette));
  EXPECT_EQ(read_image(dir_ / "palette.png").pixels, (std::vector<uint8_t>{0, 255, 0, 255}));
}

// ------------------------------------------------------------ PGM reading

TEST_F(ImageTest, ReadsBinaryPgm8Bit) {
  write_bytes(dir_ / "a.pgm",
              std::string("P5\n3 2\n255\n", 11) + std::string("\x00\x0a\x20\x80\xfe\xff", 6));
  const GrayImage image = read_image(dir_ / "a.pgm");
  EXPECT_EQ(image.width, 3);
  EXPECT_EQ(image.height, 2);
  // 0x0a and 0x20 are whitespace bytes: the raster must not be skipped over.
  EXPECT_EQ(image.pixels, (std::vector<uint8_t>{0, 10, 32, 128, 254, 255}));
}

TEST_F(ImageTest, ReadsBinaryPgm16BitBigEndian) {
  write_bytes(dir_ / "b.pgm", std::string("P5 2 2 65535\n", 13) +
                                  std::string("\x00\x00\xff\xff\x80\x80\x01\x01", 8));
  EXPECT_EQ(read_image(dir_ / "b.pgm").pixels, (std::vector<uint8_t>{0, 255, 128, 1}));
}

TEST_F(ImageTest, ReadsAsciiPgmWithComments) {
  write_bytes(dir_ / "c.pgm", "P2\n# made by hand\n4 # width\n1\n15\n0 7\n  15\t8\n");
  // Scaled from maxval 15 with rounding: 7 -> 119, 8 -> 136.
  EXPECT_EQ(read_image(dir_ / "c.pgm").pixels, (std::vector<uint8_t>{0, 119, 255, 136}));
}

TEST_F(ImageTest, ReadsAsciiPgm16Bit) {
  write_bytes(dir_ / "d.pgm", "P2 3 1 1000\n0 500 1000");  // No final newline.
  EXPECT_EQ(read_image(dir_ / "d.pgm").pixels, (std::vector<uint8_t>{0, 128, 255}));
}

TEST_F(ImageTest, CommentBeforeRasterSeparatorInBinaryPgm) {
  write_bytes(dir_ / "e.pgm", std::string("P5 1 1 255# comment\n\x07", 21));
  EXPECT_EQ(read_image(dir_ / "e.pgm").pixels, (std::vector<uint8_t>{7}));
}

TEST_F(ImageTest, FormatComesFromContentNotExtension) {
  write_png(dir_ / "really_png.pgm", 1, 1, PNG_FORMAT_GRAY, {77});
  write_bytes(dir_ / "really_pgm.png", "P2 1 1 255 88\n");
  EXPECT_EQ(read_image(dir_ / "really_png.pgm").pixels, (std::vector<uint8_t>{77}));
  EXPECT_EQ(read_image(dir_ / "really_pgm.png").pixels, (std::vector<uint8_t>{88}));
}

// ------------------------------------------------------------ bad input

TEST_F(ImageTest, NotAnImage) {
  write_bytes(dir_ / "notes.png", "hello, this is text\n");
  expect_image_error(dir_ / "notes.png", "not a PNG or PGM image");
}

TEST_F(ImageTest, EmptyFile) {
  write_bytes(dir_ / "empty.png", "");
  expect_image_error(dir_ / "empty.png", "file is empty");
}

TEST_F(ImageTest, DirectoryAndMissingFile) {
  expect_image_error(dir_, "is a directory");
  expect_image_error(dir_ / "missing.png", "cannot open: No such file or directory");
}

TEST_F(ImageTest, UnsupportedNetpbmVariant) {
  write_bytes(dir_ / "colour.ppm", "P6 1 1 255\nabc");
  expect_image_error(dir_ / "colour.ppm", "P6 is not supported");
}

TEST_F(ImageTest, TruncatedPngAtEveryLengthIsRejected) {
  write_png(dir_ / "full.png", 28, 28, PNG_FORMAT_GRAY, mnist_like_digit());
  const std::string bytes = read_bytes(dir_ / "full.png");
  const fs::path file = dir_ / "cut.png";
  for (size_t length = 1; length < bytes.size(); ++length) {
    SCOPED_TRACE("truncated to " + std::to_string(length) + " of " + std::to_string(bytes.size()));
    write_bytes(file, bytes.substr(0, length));
    EXPECT_THROW(read_image(file), ImageError);
  }
  write_bytes(file, bytes.substr(0, bytes.size() / 2));
  expect_image_error(file, "truncated PNG");
  write_bytes(file, bytes.substr(0, 20));  // Inside the IHDR chunk.
  expect_image_error(file, "truncated PNG: chunk 'IHDR' at byte 8 declares 13 bytes of data");
}

// fuzz_image found this: a chunk declaring far more data than the file holds
// made libpng allocate the declared 512 MiB before reading. The chunk walk
// refuses it first; fuzz/regressions/image/png-splt-512mib is the fuzzer's
// original input.
TEST_F(ImageTest, PngChunkLongerThanTheFileIsRefusedBeforeLibpngSeesIt) {
  std::string png = build_png(2, 2, 8, 0, std::string(6, '\0'));
  const size_t after_ihdr = 8 + 12 + 13;
  std::string huge;
  append_u32(huge, 0x20000001u);
  huge += "sPLT";
  png.insert(after_ihdr, huge + "palette");
  write_bytes(dir_ / "huge_chunk.png", png);
  expect_image_error(dir_ / "huge_chunk.png",
                     "truncated PNG: chunk 'sPLT' at byte 33 declares 536870913 bytes of data");

  std::string over_limit = build_png(2, 2, 8, 0, std::string(6, '\0'));
  over_limit.replace(after_ihdr, 4, std::string("\x80\0\0\0", 4));  // IDAT's length, 2^31.
  write_bytes(dir_ / "over_limit.png", over_limit);
  expect_image_error(dir_ / "over_limit.png", "more than PNG allows");

  std::string bad_type = build_png(2, 2, 8, 0, std::string(6, '\0'));
  bad_type[after_ihdr + 5] = '\x01';  // IDAT -> I\x01AT
  write_bytes(dir_ / "bad_type.png", bad_type);
  expect_image_error(dir_ / "bad_type.png", "not four ASCII letters");
}

TEST_F(ImageTest, PngEndsWithTheStandardIendAndMayHaveJunkAfterIt) {
  const std::string png = build_png(2, 2, 8, 0, std::string(6, '\0'));
  write_bytes(dir_ / "junk.png", png + "trailing junk from some tool");
  EXPECT_EQ(read_image(dir_ / "junk.png").width, 2);

  std::string bad_end = png;
  bad_end[bad_end.size() - 1] ^= 0x01;  // IEND's CRC.
  write_bytes(dir_ / "bad_end.png", bad_end);
  expect_image_error(dir_ / "bad_end.png", "IEND chunk at byte");

  write_bytes(dir_ / "no_end.png", png.substr(0, png.size() - 12));
  expect_image_error(dir_ / "no_end.png", "without its final IEND chunk");
}

TEST_F(ImageTest, PngWithTooLittleImageDataIsRejected) {
  // Structurally complete (IEND present) but IDAT holds 2 of 4 rows.
  write_bytes(dir_ / "short.png", build_png(4, 4, 8, 0, std::string(10, '\0')));
  expect_image_error(dir_ / "short.png", "invalid PNG");
}

TEST_F(ImageTest, CorruptPngChecksumIsRejected) {
  write_png(dir_ / "bad.png", 2, 2, PNG_FORMAT_GRAY, {1, 2, 3, 4});
  std::string bytes = read_bytes(dir_ / "bad.png");
  bytes[16] ^= 0x01;  // Inside IHDR's width: its CRC no longer matches.
  write_bytes(dir_ / "bad.png", bytes);
  expect_image_error(dir_ / "bad.png", "invalid PNG");
}

TEST_F(ImageTest, TruncatedPgm) {
  write_bytes(dir_ / "short5.pgm", std::string("P5 4 4 255\n\x01\x02\x03", 14));
  expect_image_error(dir_ / "short5.pgm",
                     "truncated PGM: pixel data is 3 bytes, the header promises 16");
  write_bytes(dir_ / "short5_16.pgm", std::string("P5 2 1 65535\n\x01\x02\x03", 16));
  expect_image_error(dir_ / "short5_16.pgm", "the header promises 4");
  write_bytes(dir_ / "short2.pgm", "P2 3 1 255\n1 2");
  expect_image_error(dir_ / "short2.pgm", "truncated PGM");
  write_bytes(dir_ / "short2b.pgm", "P2 2 2 255\n1  2  3   ");
  expect_image_error(dir_ / "short2b.pgm", "found 3 of 4 samples");
  write_bytes(dir_ / "header.pgm", "P5 4 4");
  expect_image_error(dir_ / "header.pgm", "truncated or malformed PGM header");
  write_bytes(dir_ / "magic_only.pgm", "P5");
  expect_image_error(dir_ / "magic_only.pgm", "truncated or malformed PGM header");
}

TEST_F(ImageTest, MalformedPgmValues) {
  write_bytes(dir_ / "maxval0.pgm", "P2 1 1 0\n0\n");
  expect_image_error(dir_ / "maxval0.pgm", "maxval 0 is invalid");
  write_bytes(dir_ / "maxval_big.pgm", "P2 1 1 65536\n0\n");
  expect_image_error(dir_ / "maxval_big.pgm", "maxval 65536 is invalid");
  write_bytes(dir_ / "sample.pgm", "P2 2 1 10\n3 11\n");
  expect_image_error(dir_ / "sample.pgm", "sample 11 exceeds maxval 10");
  write_bytes(dir_ / "sample16.pgm", std::string("P5 1 1 1000\n\x03\xe9", 14));
  expect_image_error(dir_ / "sample16.pgm", "sample 1001 exceeds maxval 1000");
  write_bytes(dir_ / "letters.pgm", "P2 abc 1 255\n0\n");
  expect_image_error(dir_ / "letters.pgm", "expected a number for width");
  write_bytes(dir_ / "glued.pgm", "P2 2x1 255\n0 0\n");
  expect_image_error(dir_ / "glued.pgm", "unexpected character after width");
  write_bytes(dir_ / "zero.pgm", "P5 0 5 255\n");
  expect_image_error(dir_ / "zero.pgm", "image is 0x5, which is empty");
  write_bytes(dir_ / "nospace.pgm", "P5x");
  expect_image_error(dir_ / "nospace.pgm", "truncated or malformed PGM header");
}

TEST_F(ImageTest, EnormousDimensionsAreRefusedBeforeAllocating) {
  struct Case {
    std::string name;
    std::string bytes;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"huge.pgm", "P5\n100000 100000\n255\n",
       "image is 100000x100000, larger than the 16384x16384 limit"},
      {"huge_ascii.pgm", "P2 100000 100000 255\n", "larger than the 16384x16384 limit"},
      {"absurd.pgm", "P5 99999999999999999999999 1 255\n", "larger than the 16384x16384 limit"},
      {"too_many_pixels.pgm", "P5 16384 16384 255\n",
       "image is 16384x16384 (268435456 pixels), more than the 67108864-pixel limit"},
      // Within limits, but the file cannot hold the pixels it claims.
      {"claims_64mp.pgm", "P5 16384 4096 65535\n", "the header promises 134217728"},
      {"claims_64mp_ascii.pgm", "P2 16384 4096 255\n", "cannot hold 67108864 ASCII samples"},
      {"huge.png", build_png(100000, 100000, 8, 0, std::string(1, '\0')),
       "image is 100000x100000, larger than the 16384x16384 limit"},
      {"tall.png", build_png(1, 20000, 8, 0, std::string(1, '\0')), "image is 1x20000, larger"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    write_bytes(dir_ / c.name, c.bytes);
    largest_allocation = 0;
    const auto start = std::chrono::steady_clock::now();
    expect_image_error(dir_ / c.name, c.expected);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
    EXPECT_LT(largest_allocation.load(), size_t{1} << 20);
  }
}

// ------------------------------------------------------------ MNIST input

GrayImage blank(int width, int height, uint8_t value) {
  return {width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height, value)};
}

void fill_rect(GrayImage& image, int x0, int y0, int x1, int y1, uint8_t value) {
  for (int y = y0; y < y1; ++y) {
    for (int x = x0; x < x1; ++x) image.pixels[static_cast<size_t>(y) * static_cast<size_t>(image.width) + static_cast<size_t>(x)] = value;
  }
}

TEST(ToMnistInputTest, LightBackground28x28IsOnlyInverted) {
  GrayImage image = blank(28, 28, 240);
  fill_rect(image, 10, 5, 14, 25, 30);
  const std::vector<float> input = to_mnist_input(image);
  for (size_t i = 0; i < input.size(); ++i) {
    ASSERT_EQ(input[i], (255 - image.pixels[i]) / 255.0f) << "pixel " << i;
  }
}

TEST(ToMnistInputTest, DarkBarOnLargeLightImageIsInvertedCroppedAndCentred) {
  // A scanned "1": a dark, slightly slanted bar on light, noisy paper, far
  // off-centre.
  GrayImage image = blank(640, 480, 0);
  for (size_t i = 0; i < image.pixels.size(); ++i) {
    image.pixels[i] = static_cast<uint8_t>(225 + (i * 7919) % 21);
  }
  for (int y = 60; y < 300; ++y) {
    const int x0 = 450 + (300 - y) / 12;
    fill_rect(image, x0, y, x0 + 36, y + 1, 25);
  }
  const std::vector<float> input = to_mnist_input(image);
  ASSERT_EQ(input.size(), 784u);
  EXPECT_NEAR(*std::max_element(input.begin(), input.end()), 1.0f, 0.02f);
  EXPECT_GE(*std::min_element(input.begin(), input.end()), 0.0f);
  const CentreOfMass com = centre_of_mass(input);
  EXPECT_NEAR(com.x, 14.0, 0.75);
  EXPECT_NEAR(com.y, 14.0, 0.75);
  // The paper is black now, and the bar is 20 pixels tall.
  EXPECT_EQ(input[0], 0.0f);
  EXPECT_EQ(input[783], 0.0f);
  int rows_with_ink = 0;
  for (int y = 0; y < 28; ++y) {
    float row = 0;
    for (int x = 0; x < 28; ++x) row += input[static_cast<size_t>(y) * 28 + static_cast<size_t>(x)];
    if (row > 0.5f) ++rows_with_ink;
  }
  EXPECT_EQ(rows_with_ink, 20);
}

TEST(ToMnistInputTest, WideDigitKeepsAspectRatio) {
  GrayImage image = blank(200, 100, 0);
  fill_rect(image, 20, 40, 180, 60, 255);  // 160x20 -> 20x2.5, rounded to 20x3 (or 2).
  const std::vector<float> input = to_mnist_input(image);
  int columns = 0, rows = 0;
  for (int i = 0; i < 28; ++i) {
    float column = 0, row = 0;
    for (int j = 0; j < 28; ++j) {
      column += input[static_cast<size_t>(j) * 28 + static_cast<size_t>(i)];
      row += input[static_cast<size_t>(i) * 28 + static_cast<size_t>(j)];
    }
    columns += column > 0 ? 1 : 0;
    rows += row > 0 ? 1 : 0;
  }
  EXPECT_EQ(columns, 20);
  EXPECT_GE(rows, 2);
  EXPECT_LE(rows, 3);
  const CentreOfMass com = centre_of_mass(input);
  EXPECT_NEAR(com.x, 14.0, 0.75);
  EXPECT_NEAR(com.y, 14.0, 0.75);
}

TEST(ToMnistInputTest, LopsidedDigitIsNotCutOff) {
  // An "L" with nearly all its mass in the upright: centring the mass on
  // x = 14 would push the end of the foot out of the frame, so the shift is
  // limited to keep the whole 20-pixel box inside.
  GrayImage image = blank(100, 100, 0);
  fill_rect(image, 10, 10, 30, 90, 255);
  fill_rect(image, 30, 88, 90, 90, 255);
  const std::vector<float> input = to_mnist_input(image);
  int leftmost = 28, rightmost = -1;
  for (int y = 0; y < 28; ++y) {
    for (int x = 0; x < 28; ++x) {
      if (input[static_cast<size_t>(y) * 28 + static_cast<size_t>(x)] > 0) {
        leftmost = std::min(leftmost, x);
        rightmost = std::max(rightmost, x);
      }
    }
  }
  EXPECT_EQ(leftmost, 8);
  EXPECT_EQ(rightmost, 27);
  EXPECT_LT(centre_of_mass(input).x, 13.0);
}

TEST(ToMnistInputTest, BlankImageGivesZeros) {
  EXPECT_EQ(to_mnist_input(blank(50, 40, 255)), std::vector<float>(784, 0.0f));
  EXPECT_EQ(to_mnist_input(blank(3, 3, 0)), std::vector<float>(784, 0.0f));
}

TEST(ToMnistInputTest, TinyImageIsScaledUp) {
  GrayImage image = blank(5, 5, 0);
  fill_rect(image, 2, 1, 3, 4, 200);  // 1x3 stroke -> 7x20 box (rounded).
  const std::vector<float> input = to_mnist_input(image);
  EXPECT_NEAR(*std::max_element(input.begin(), input.end()), 1.0f, 1e-6f);
  const CentreOfMass com = centre_of_mass(input);
  EXPECT_NEAR(com.x, 14.0, 0.75);
  EXPECT_NEAR(com.y, 14.0, 0.75);
}

TEST(ToMnistInputTest, InconsistentImageIsRejected) {
  EXPECT_THROW(to_mnist_input(GrayImage{2, 2, {1, 2, 3}}), std::invalid_argument);
  EXPECT_THROW(to_mnist_input(GrayImage{}), std::invalid_argument);
}

}  // namespace
}  // namespace tbgrad::mnist
