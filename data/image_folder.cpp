#include "data/image_folder.hpp"

#include <algorithm>
#include <cctype>
#include <string>
#include <system_error>

namespace tbgrad::data {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const fs::path& where, const std::string& what) {
  throw DataError(where.string() + ": " + what);
}

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return name.empty() || name[0] == '.';
}

bool is_png_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png";
}

// The entries of `dir` that pass `keep`, sorted by name; errors name `dir`.
template <typename Keep>
std::vector<fs::path> list(const fs::path& dir, const Keep& keep) {
  std::vector<fs::path> out;
  std::error_code error;
  fs::directory_iterator it(dir, error);
  if (error) fail(dir, "cannot list: " + error.message());
  for (const fs::directory_iterator end; it != end; it.increment(error)) {
    if (error) break;
    if (!hidden(it->path()) && keep(*it)) out.push_back(it->path());
  }
  if (error) fail(dir, "cannot list: " + error.message());
  std::sort(out.begin(), out.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename().string() < b.filename().string(); });
  return out;
}

std::string describe(const PngImage& image) {
  return std::to_string(image.width) + "x" + std::to_string(image.height) + " with " +
         std::to_string(image.channels) + (image.channels == 1 ? " channel" : " channels");
}

}  // namespace

ImageFolder read_image_folder(const fs::path& root, const ImageFolderOptions& options) {
  if (options.channels < 0 || options.channels > 4) {
    fail(root, "ImageFolderOptions::channels must be 0 (as the files are) to 4, got " +
                   std::to_string(options.channels));
  }
  std::error_code error;
  if (!fs::is_directory(root, error)) {
    fail(root, error ? "cannot read: " + error.message() : std::string("is not a folder"));
  }
  const std::vector<fs::path> class_dirs = list(root, [](const fs::directory_entry& e) {
    std::error_code ignored;
    return e.is_directory(ignored);
  });
  if (class_dirs.empty()) {
    fail(root, "no classes: expected one sub-folder per class, each holding its .png images");
  }
  constexpr std::size_t kMaxClasses = 256;  // labels are bytes
  if (class_dirs.size() > kMaxClasses) {
    fail(root, std::to_string(class_dirs.size()) + " class folders, more than the " +
                   std::to_string(kMaxClasses) + " a data set's byte labels can name");
  }
  ImageFolder result;
  Dataset& d = result.data;
  std::vector<std::uint8_t> bytes, scratch;
  PngImage image;
  PngImage first;  // the first image's size and channels (pixels unused)
  std::uint64_t example_bytes = 0;
  for (std::size_t label = 0; label < class_dirs.size(); ++label) {
    const fs::path& dir = class_dirs[label];
    result.classes.push_back(dir.filename().string());
    const std::vector<fs::path> files = list(dir, [](const fs::directory_entry& e) {
      std::error_code ignored;
      return is_png_name(e.path()) && e.is_regular_file(ignored);
    });
    if (files.empty()) fail(dir, "empty class folder: no .png images");
    for (const fs::path& file : files) {
      bytes = detail::read_file(file, std::move(bytes));
      detail::decode_png(file, bytes, options.channels, scratch, image);
      if (result.files.empty()) {
        first.width = image.width;
        first.height = image.height;
        first.channels = image.channels;
        d.rows = image.height;
        d.cols = image.width;
        d.channels = image.channels;
        example_bytes = image.pixels.size();
      } else if (image.width != first.width || image.height != first.height ||
                 image.channels != first.channels) {
        fail(file, "image is " + describe(image) + " (IHDR at byte offset 16), but the first image, " +
                       result.files.front().string() + ", is " + describe(first) +
                       "; every image must have the same size and channels");
      }
      std::uint64_t total = 0;
      if (__builtin_mul_overflow(static_cast<std::uint64_t>(d.count) + 1, example_bytes, &total) ||
          total >= d.images.max_size()) {
        fail(file, "the data set would hold more bytes than can be addressed");
      }
      d.images.insert(d.images.end(), image.pixels.begin(), image.pixels.end());
      d.labels.push_back(static_cast<std::uint8_t>(label));
      result.files.push_back(file);
      ++d.count;
    }
  }
  return result;
}

}  // namespace tbgrad::data
