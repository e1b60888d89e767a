// Reading and writing data sets in the idx format (MNIST's)
// (http://yann.lecun.com/exdb/mnist/: a big-endian header followed by raw bytes).
//
// Every input is treated as untrusted: headers are validated before any size they
// claim is used to allocate, so a damaged or hostile file fails with a DataError
// that names the file instead of exhausting memory or crashing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tbgrad/data/dataset.hpp"

namespace tbgrad::data {

inline constexpr int kImageRows = 28;
inline constexpr int kImageCols = 28;
inline constexpr int kNumClasses = 10;

enum class Split { kTrain, kTest };

// The MNIST file names of a split, e.g. "train-images-idx3-ubyte".
std::string_view images_file_name(Split split);
std::string_view labels_file_name(Split split);

// Loads one split from `dir`. Each file may be stored raw or gzip-compressed as NAME.gz;
// the raw file wins when both exist. Images must be required_rows x required_cols,
// labels must be 0-9, and both files must hold the same number of items.
Dataset load_split(const std::filesystem::path& dir, Split split, int required_rows = kImageRows,
                   int required_cols = kImageCols);

// Lower-level readers for a single file; a path ending in ".gz" is decompressed.
struct IdxImages {
  int64_t count = 0;
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t> pixels;  // [count, rows*cols], row-major.
};
IdxImages read_idx_images(const std::filesystem::path& file, int required_rows = kImageRows,
                          int required_cols = kImageCols);
std::vector<uint8_t> read_idx_labels(const std::filesystem::path& file);

// Writes uncompressed idx files with the standard big-endian header. `pixels` holds
// count*rows*cols bytes, `labels` holds count bytes. Failures throw DataError.
void write_idx_images(const std::filesystem::path& file, int64_t count, int rows, int cols,
                      const uint8_t* pixels);
void write_idx_labels(const std::filesystem::path& file, int64_t count, const uint8_t* labels);

// As above, but gzip-compressed (the caller picks the name, normally NAME.gz).
void write_idx_images_gz(const std::filesystem::path& file, int64_t count, int rows, int cols,
                         const uint8_t* pixels);
void write_idx_labels_gz(const std::filesystem::path& file, int64_t count, const uint8_t* labels);

}  // namespace tbgrad::data
