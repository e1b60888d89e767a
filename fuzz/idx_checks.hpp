// The invariants both idx fuzz targets (fuzz_idx, fuzz_idx_gz) check on one file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

#include "apps/mnist/idx.hpp"
#include "fuzz/fuzz_util.hpp"

namespace tbgrad_fuzz {

// Reads `file` as images of rows x cols and as labels. What a reader accepts must be consistent
// (a non-zero count, the required size, as many bytes as the header claims: exactly
// `data_size`, the uncompressed file's size, when the caller knows it; labels 0-9); what it
// refuses must be a DataError naming the file.
inline void check_idx_readers(const std::filesystem::path& file, int rows, int cols,
                              std::optional<size_t> data_size) {
  try {
    const tbgrad::mnist::IdxImages images = tbgrad::mnist::read_idx_images(file, rows, cols);
    check(images.count > 0, "images: zero count accepted");
    check(images.rows == rows && images.cols == cols, "images: size differs from the required");
    check(images.pixels.size() == static_cast<size_t>(images.count) * static_cast<size_t>(rows) *
                                      static_cast<size_t>(cols),
          "images: pixel count differs from count*rows*cols");
    if (data_size) {
      check(*data_size == 16 + images.pixels.size(), "images: data size differs from header+pixels");
    }
  } catch (const tbgrad::mnist::DataError& e) {
    check_names_file(e.what(), file);
  }

  try {
    const std::vector<uint8_t> labels = tbgrad::mnist::read_idx_labels(file);
    check(!labels.empty(), "labels: zero count accepted");
    if (data_size) check(*data_size == 8 + labels.size(), "labels: data size differs from header+labels");
    for (uint8_t label : labels) check(label <= 9, "labels: label outside 0-9 accepted");
  } catch (const tbgrad::mnist::DataError& e) {
    check_names_file(e.what(), file);
  }
}

}  // namespace tbgrad_fuzz
