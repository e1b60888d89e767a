#include "data/png.hpp"

#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

namespace tbgrad::data {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw DataError(file.string() + ": " + what);
}

std::string errno_message(int err) {
  return std::generic_category().message(err);
}

constexpr std::array<unsigned char, 8> kSignature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

// What the chunk walk learns: the header's size and the IDAT bytes.
struct Layout {
  std::uint32_t width = 0, height = 0;
  std::uint64_t idat_bytes = 0;
};

// Walks the chunks before libpng sees them (as apps/mnist/image.cpp does, for the same reasons:
// libpng sizes some buffers from a chunk's declared length, and stops reading once it has the
// pixels), with each chunk's CRC checked, so a fault is reported at its chunk's byte offset:
// every chunk's length must fit in the bytes after it, its type be four letters, its CRC match,
// the first be IHDR and the walk reach IEND. Bytes after IEND are ignored, as libpng does.
Layout walk_chunks(const fs::path& file, std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kSignature.size() ||
      !std::equal(kSignature.begin(), kSignature.end(), bytes.begin())) {
    fail(file, "not a PNG file: the 8-byte PNG signature is missing at byte offset 0");
  }
  Layout layout;
  std::uint64_t at = kSignature.size();
  for (bool first = true;; first = false) {
    const std::uint64_t left = bytes.size() - at;
    if (left < 12) {
      fail(file, "truncated PNG: the file ends at byte offset " + std::to_string(bytes.size()) +
                     " without its final IEND chunk");
    }
    const unsigned char* header = bytes.data() + at;
    const std::uint64_t length = be32(header);
    const std::string type(reinterpret_cast<const char*>(header) + 4, 4);
    const auto is_letter = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); };
    if (!std::all_of(type.begin(), type.end(), is_letter)) {
      fail(file, "bad PNG: the chunk at byte offset " + std::to_string(at) +
                     " has a type that is not four ASCII letters");
    }
    if (length > 0x7FFFFFFF || length > left - 12) {
      fail(file, "truncated PNG: chunk '" + type + "' at byte offset " + std::to_string(at) +
                     " declares " + std::to_string(length) + " bytes of data, but " +
                     std::to_string(left - 12) + " follow its header (less its CRC)");
    }
    const auto crc = static_cast<std::uint32_t>(
        crc32(crc32(0L, Z_NULL, 0), header + 4, static_cast<uInt>(length + 4)));
    if (crc != be32(header + 8 + length)) {
      fail(file, "bad PNG: chunk '" + type + "' at byte offset " + std::to_string(at) +
                     " fails its CRC check (the file is damaged)");
    }
    if (first) {
      if (type != "IHDR" || length != 13) {
        fail(file, "bad PNG: the first chunk, at byte offset 8, is '" + type + "' of " +
                       std::to_string(length) + " bytes, not the 13-byte IHDR");
      }
      layout.width = be32(header + 8);
      layout.height = be32(header + 12);
    }
    if (type == "IDAT") layout.idat_bytes += length;
    if (type == "IEND") return layout;
    at += 12 + length;
  }
}

}  // namespace

namespace detail {

void decode_png(const fs::path& file, std::span<const std::uint8_t> bytes, int channels,
                std::vector<std::uint8_t>& scratch, PngImage& out) {
  if (channels < 0 || channels > 4) {
    fail(file, "cannot read as " + std::to_string(channels) + " channels (0 to 4)");
  }
  const Layout layout = walk_chunks(file, bytes);
  // The IHDR's width and height (at byte offset 16), refused over the limits before libpng
  // allocates anything for them.
  const std::string size = std::to_string(layout.width) + "x" + std::to_string(layout.height);
  if (layout.width == 0 || layout.height == 0) fail(file, "bad PNG: the IHDR at byte offset 16 says " + size);
  if (layout.width > kMaxPngSide || layout.height > kMaxPngSide ||
      std::uint64_t{layout.width} * layout.height > static_cast<std::uint64_t>(kMaxPngPixels)) {
    fail(file, "image is " + size + " (IHDR at byte offset 16), over the limits of " +
                   std::to_string(kMaxPngSide) + " pixels a side and " +
                   std::to_string(kMaxPngPixels) + " pixels");
  }
  // Deflate expands at most 1032 times, and a 1-bit image packs 8 pixels a byte: fewer IDAT
  // bytes than that allows cannot hold the image, so it is refused before its buffer exists.
  if (std::uint64_t{layout.width} * layout.height > (layout.idat_bytes + 1) * 8 * 1032) {
    fail(file, "truncated PNG: " + std::to_string(layout.idat_bytes) +
                   " bytes of image data (IDAT) cannot hold a " + size + " image");
  }

  // libpng's simplified API keeps its setjmp/longjmp error handling inside C code and reports
  // failure by a return value: no longjmp crosses a C++ frame. It reads from a stdio stream over
  // the bytes, so that where it stopped is known (ftell) for the message.
  std::FILE* stream = ::fmemopen(const_cast<std::uint8_t*>(bytes.data()), bytes.size(), "rb");
  if (stream == nullptr) fail(file, "cannot read: " + errno_message(errno));
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  struct Guard {
    png_image* image;
    std::FILE* stream;
    ~Guard() {
      png_image_free(image);  // harmless after png_image_finish_read
      std::fclose(stream);
    }
  } guard{&image, stream};
  const auto libpng_failed = [&](const char* step) {
    const long at = std::ftell(stream);
    fail(file, std::string("bad PNG (") + step + " stopped at byte offset " +
                   (at >= 0 ? std::to_string(at) : std::string("?")) + "): " + image.message);
  };
  if (png_image_begin_read_from_stdio(&image, stream) == 0) libpng_failed("reading its header");

  const bool color = (image.format & PNG_FORMAT_FLAG_COLOR) != 0;
  const bool alpha = (image.format & PNG_FORMAT_FLAG_ALPHA) != 0;
  const int own = (color ? 3 : 1) + (alpha ? 1 : 0);
  const int want = channels == 0 ? own : channels;
  // Decoded with an alpha channel whenever the file or the result has one, so libpng never
  // composites; a result without alpha drops it below.
  const bool want_color = want >= 3;
  const bool decode_alpha = alpha || want == 2 || want == 4;
  image.format = (want_color ? PNG_FORMAT_FLAG_COLOR : 0U) | (decode_alpha ? PNG_FORMAT_FLAG_ALPHA : 0U);
  image.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;  // 16-bit samples are sRGB values, just finer
  const int decoded = (want_color ? 3 : 1) + (decode_alpha ? 1 : 0);
  const std::size_t pixels = std::size_t{image.width} * image.height;
  scratch.resize(pixels * static_cast<std::size_t>(decoded));
  if (png_image_finish_read(&image, nullptr, scratch.data(), 0, nullptr) == 0) {
    libpng_failed("decoding its pixels");
  }
  out.width = static_cast<int>(image.width);
  out.height = static_cast<int>(image.height);
  out.channels = want;
  out.pixels.resize(pixels * static_cast<std::size_t>(want));
  // Interleaved to planes; channel c of the result is channel c decoded, except a wanted alpha
  // (2 or 4 channels), which is the decoded alpha, always last.
  for (int c = 0; c < want; ++c) {
    std::uint8_t* plane = out.pixels.data() + static_cast<std::size_t>(c) * pixels;
    const std::uint8_t* in = scratch.data() + c;
    for (std::size_t i = 0; i < pixels; ++i) plane[i] = in[i * static_cast<std::size_t>(decoded)];
  }
}

std::vector<std::uint8_t> read_file(const fs::path& file, std::vector<std::uint8_t>&& buffer) {
  // O_NONBLOCK so that a FIFO is refused below instead of blocking the open.
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(file, "cannot open: " + errno_message(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0) fail(file, "cannot stat: " + errno_message(errno));
  if (S_ISDIR(info.st_mode)) fail(file, "is a directory, expected a PNG file");
  if (!S_ISREG(info.st_mode)) fail(file, "is not a regular file");
  const auto size = static_cast<std::uint64_t>(info.st_size);
  if (size == 0) fail(file, "empty file");
  if (size > kMaxPngFileBytes) {
    fail(file, "file is " + std::to_string(size) + " bytes, over the " +
                   std::to_string(kMaxPngFileBytes >> 20) + " MiB limit");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    fail(file, "cannot read: " + errno_message(errno));
  }
  buffer.resize(static_cast<std::size_t>(size));
  std::size_t done = 0;
  while (done < buffer.size()) {
    const ssize_t got = ::read(fd, buffer.data() + done, buffer.size() - done);
    if (got < 0) {
      if (errno == EINTR) continue;
      fail(file, "read failed at byte offset " + std::to_string(done) + ": " + errno_message(errno));
    }
    if (got == 0) fail(file, "truncated: the file ended at byte offset " + std::to_string(done) + " while being read");
    done += static_cast<std::size_t>(got);
  }
  return std::move(buffer);
}

}  // namespace detail

PngImage read_png(const fs::path& file, int channels) {
  const std::vector<std::uint8_t> bytes = detail::read_file(file, {});
  std::vector<std::uint8_t> scratch;
  PngImage image;
  detail::decode_png(file, bytes, channels, scratch, image);
  return image;
}

void write_png(const fs::path& file, int width, int height, int channels,
               const std::uint8_t* pixels) {
  if (width <= 0 || height <= 0 || channels < 1 || channels > 4 || pixels == nullptr ||
      width > kMaxPngSide || height > kMaxPngSide) {
    fail(file, "cannot write a " + std::to_string(width) + "x" + std::to_string(height) +
                   " PNG of " + std::to_string(channels) + " channels");
  }
  const std::size_t n = std::size_t(width) * std::size_t(height);
  std::vector<std::uint8_t> interleaved(n * static_cast<std::size_t>(channels));
  for (int c = 0; c < channels; ++c) {
    for (std::size_t i = 0; i < n; ++i) {
      interleaved[i * static_cast<std::size_t>(channels) + static_cast<std::size_t>(c)] =
          pixels[static_cast<std::size_t>(c) * n + i];
    }
  }
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = (channels >= 3 ? PNG_FORMAT_FLAG_COLOR : 0U) |
                 (channels == 2 || channels == 4 ? PNG_FORMAT_FLAG_ALPHA : 0U);
  if (png_image_write_to_file(&image, file.c_str(), 0, interleaved.data(), 0, nullptr) == 0) {
    const std::string message = image.message;
    png_image_free(&image);
    fail(file, "cannot write PNG: " + message);
  }
}

}  // namespace tbgrad::data
