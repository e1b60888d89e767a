// Reading and writing CIFAR-10 and CIFAR-100 in their binary format
// (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"): a file is a run of records,
// each a label byte (CIFAR-100: a coarse then a fine label byte) and 3072 pixel bytes, the red,
// green and blue 32x32 planes in turn, rows top to bottom. Users bring the files.
//
// Every input is untrusted: a file that is empty, not a whole number of records or holds a
// label out of range fails with a DataError naming the file and the byte offset of the fault.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "tbgrad/data/dataset.hpp"
#include "tbgrad/data/idx.hpp"

namespace tbgrad::data {

inline constexpr int kCifarSide = 32;
inline constexpr int kCifarChannels = 3;
inline constexpr std::int64_t kCifarImageBytes = std::int64_t{kCifarChannels} * kCifarSide * kCifarSide;

// Which of CIFAR-100's two labels a data set takes: the 100 fine classes or the 20 superclasses.
enum class CifarLabels { kFine, kCoarse };

// The files, concatenated in the order given, as one data set of [count, 3, 32, 32] bytes.
// CIFAR-10 labels must be 0-9; CIFAR-100 coarse labels 0-19 and fine labels 0-99.
Dataset read_cifar10(const std::vector<std::filesystem::path>& files);
Dataset read_cifar100(const std::vector<std::filesystem::path>& files,
                      CifarLabels labels = CifarLabels::kFine);

// A split from the directory the archive unpacks to: CIFAR-10's data_batch_1.bin to
// data_batch_5.bin (train) or test_batch.bin (cifar-10-batches-bin/), CIFAR-100's train.bin or
// test.bin (cifar-100-binary/).
Dataset load_cifar10(const std::filesystem::path& dir, Split split);
Dataset load_cifar100(const std::filesystem::path& dir, Split split,
                      CifarLabels labels = CifarLabels::kFine);

// Writes `count` records: `pixels` holds count * 3072 bytes ([count, 3, 32, 32]), the labels
// count bytes each. Failures throw DataError.
void write_cifar10(const std::filesystem::path& file, std::int64_t count, const std::uint8_t* pixels,
                   const std::uint8_t* labels);
void write_cifar100(const std::filesystem::path& file, std::int64_t count,
                    const std::uint8_t* pixels, const std::uint8_t* coarse,
                    const std::uint8_t* fine);

}  // namespace tbgrad::data
