// PNG images as data set examples: decoded with libpng into [channels, height, width] byte
// planes (the library links libpng privately), and written back (for tests and tools).
//
// Every file is untrusted: anything malformed (a bad signature, a chunk that runs past the end
// of the file or fails its CRC, a truncated image, sizes over the limits below) fails with a
// DataError naming the file and the byte offset where reading stopped, never a crash, and a
// lying header costs no allocation beyond the limits.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "tbgrad/data/dataset.hpp"

namespace tbgrad::data {

// Images larger than this in either side, or in total pixels, are refused before any pixel
// memory is allocated; so are files over kMaxPngFileBytes.
inline constexpr int kMaxPngSide = 16384;
inline constexpr std::int64_t kMaxPngPixels = std::int64_t{16} * 1024 * 1024;
inline constexpr std::uint64_t kMaxPngFileBytes = std::uint64_t{256} * 1024 * 1024;

struct PngImage {
  int width = 0, height = 0, channels = 0;
  std::vector<std::uint8_t> pixels;  // [channels, height, width]
};

// Reads a PNG of any colour type and bit depth as 8-bit planes. `channels` 0 keeps the file's
// own: gray 1, gray + alpha 2, RGB or palette 3, RGBA or palette with transparency 4. 1, 2, 3 or
// 4 converts (libpng's conversions: colour to gray by luminance, gray to RGB by copying, an
// added alpha opaque; an alpha the result has no room for is dropped, not composited, as PIL's
// convert does). 16-bit samples are scaled to 8 bits as sRGB values (not as linear light).
// Throws DataError ("FILE: ...") for anything else.
PngImage read_png(const std::filesystem::path& file, int channels = 0);

// Writes `pixels` ([channels, height, width], channels 1 to 4) as an 8-bit PNG. Throws DataError.
void write_png(const std::filesystem::path& file, int width, int height, int channels,
               const std::uint8_t* pixels);

namespace detail {

// The reader's inside, shared with read_image_folder and the fuzz harness. decode_png decodes
// `bytes` (the file's contents; `file` names it in errors) into `out` as read_png does, through
// `scratch` (reused: no allocation once large enough). read_file returns the whole file in
// `buffer`'s storage, after read_png's checks (a regular file, not empty, at most
// kMaxPngFileBytes).
void decode_png(const std::filesystem::path& file, std::span<const std::uint8_t> bytes,
                int channels, std::vector<std::uint8_t>& scratch, PngImage& out);
std::vector<std::uint8_t> read_file(const std::filesystem::path& file,
                                    std::vector<std::uint8_t>&& buffer);

}  // namespace detail
}  // namespace tbgrad::data
