// A synthetic stand-in for MNIST: 28x28 images of ten simple shapes, one per class.
//
// It exists so the trainer and its tests can run end to end on machines without the
// real data set. The classes are easy to tell apart, but random shifts, ink strength
// and noise keep a model from memorising fixed pixels.
#pragma once

#include <cstdint>
#include <filesystem>

#include "apps/mnist/idx.hpp"

namespace tbgrad::mnist {

// Class index -> shape drawn for it.
enum class SyntheticShape : uint8_t {
  kHorizontalBar = 0,
  kVerticalBar = 1,
  kDiagonalDown = 2,  // top-left to bottom-right
  kDiagonalUp = 3,    // bottom-left to top-right
  kBoxOutline = 4,
  kFilledSquare = 5,
  kCross = 6,
  kDot = 7,
  kTopHalf = 8,
  kLeftHalf = 9,
};

// `count` 28x28 images with labels drawn uniformly from 0-9. The same seed gives the
// same bytes on every platform and standard library: only std::mt19937_64 (whose output
// the standard fixes) and integer arithmetic are used.
Dataset make_synthetic(int64_t count, uint64_t seed);

// Writes the four MNIST-named idx files into `dir` (created if needed), gzip-compressed
// as NAME.gz when `gzip` is set. The other form of each file is removed, because the
// loader prefers a raw file and a stale one would otherwise shadow the new .gz.
void write_dataset(const std::filesystem::path& dir, const Dataset& train, const Dataset& test,
                   bool gzip = false);

}  // namespace tbgrad::mnist
