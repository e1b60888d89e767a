// The MNIST trainer's names for the library's data module (tbgrad/data/idx.hpp).
#pragma once

#include "tbgrad/data/idx.hpp"

namespace tbgrad::mnist {

using data::DataError;
using data::Dataset;
using data::IdxImages;
using data::images_file_name;
using data::kImageCols;
using data::kImageRows;
using data::kNumClasses;
using data::labels_file_name;
using data::load_split;
using data::read_idx_images;
using data::read_idx_labels;
using data::Split;
using data::write_idx_images;
using data::write_idx_images_gz;
using data::write_idx_labels;
using data::write_idx_labels_gz;

}  // namespace tbgrad::mnist
