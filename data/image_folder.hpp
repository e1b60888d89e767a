// A folder of PNG images, one sub-folder per class (torchvision's ImageFolder layout):
//
//   root/cat/001.png, root/cat/002.png, ..., root/dog/001.png, ...
//
// Classes are the sub-folders sorted by name (label i is the i-th); within a class the images
// are taken in file-name order. Every image must have the first one's size and channel count.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "tbgrad/data/dataset.hpp"
#include "tbgrad/data/png.hpp"

namespace tbgrad::data {

struct ImageFolderOptions {
  // 0: the files' own channel count (every file must have the same); 1 to 4: every image
  // converted to it (read_png).
  int channels = 0;
};

struct ImageFolder {
  Dataset data;                               // [count, channels, height, width] bytes
  std::vector<std::string> classes;           // sorted; label i names classes[i]
  std::vector<std::filesystem::path> files;   // example k's file
};

// Reads every *.png file (any case of the extension) of every class folder under `root`; other
// files and anything whose name starts with '.' are skipped, sub-folders of a class folder are
// not searched. Throws DataError naming the folder or file for: no class folders, more than 256
// classes (labels are bytes), a class folder without images, a malformed PNG (with the byte
// offset: read_png), or an image of another size or channel count than the first (naming both).
ImageFolder read_image_folder(const std::filesystem::path& root,
                              const ImageFolderOptions& options = {});

}  // namespace tbgrad::data
