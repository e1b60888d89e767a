#include "fuzz/seeds.hpp"

#include <png.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/mnist/idx.hpp"
#include "data/cifar.hpp"
#include "nn/checkpoint.hpp"

namespace tbgrad_fuzz {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

Bytes read_all(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

class SeedWriter {
 public:
  explicit SeedWriter(fs::path root) : root_(std::move(root)) {}

  void add(const std::string& target, const std::string& name, const Bytes& prefix,
           const Bytes& body) {
    fs::create_directories(root_ / target);
    std::ofstream out(root_ / target / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(prefix.data()), static_cast<std::streamsize>(prefix.size()));
    out.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size()));
    if (!out) throw std::runtime_error("cannot write seed " + (root_ / target / name).string());
    ++count_;
  }
  const fs::path& root() const { return root_; }
  int count() const { return count_; }

 private:
  fs::path root_;
  int count_ = 0;
};

Bytes pattern(size_t n, unsigned modulo) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>((i * 37 + 11) % modulo);
  return b;
}

// An idx file made by the project's writer, raw or gzip.
Bytes idx_images(const fs::path& tmp, int64_t count, int rows, int cols, bool gz) {
  const Bytes pixels = pattern(static_cast<size_t>(count * rows * cols), 251);
  const fs::path file = tmp / (gz ? "i.gz" : "i");
  if (gz) {
    tbgrad::mnist::write_idx_images_gz(file, count, rows, cols, pixels.data());
  } else {
    tbgrad::mnist::write_idx_images(file, count, rows, cols, pixels.data());
  }
  return read_all(file);
}

Bytes idx_labels(const fs::path& tmp, int64_t count, bool gz) {
  const Bytes labels = pattern(static_cast<size_t>(count), 10);
  const fs::path file = tmp / (gz ? "l.gz" : "l");
  if (gz) {
    tbgrad::mnist::write_idx_labels_gz(file, count, labels.data());
  } else {
    tbgrad::mnist::write_idx_labels(file, count, labels.data());
  }
  return read_all(file);
}

tbgrad::nn::CheckpointTensor tensor(const std::string& name, const std::string& dtype,
                                    std::vector<int64_t> shape, size_t element_size) {
  tbgrad::nn::CheckpointTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  size_t n = 1;
  for (int64_t d : t.shape) n *= static_cast<size_t>(d);
  const Bytes bytes = pattern(n * element_size, 255);
  t.data.resize(bytes.size());
  if (!bytes.empty()) std::memcpy(t.data.data(), bytes.data(), bytes.size());  // data() may be null
  return t;
}

Bytes checkpoint(const fs::path& tmp, const tbgrad::nn::Checkpoint& ckpt) {
  const fs::path file = tmp / "c.ckpt";
  tbgrad::nn::save_checkpoint(file, ckpt);
  return read_all(file);
}

Bytes png(int width, int height, uint32_t format, int channels) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = format;
  const Bytes pixels =
      pattern(static_cast<size_t>(width) * static_cast<size_t>(height) * static_cast<size_t>(channels), 256);
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data(), 0, nullptr)) {
    throw std::runtime_error(std::string("png size: ") + image.message);
  }
  Bytes out(size);
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(), 0, nullptr)) {
    throw std::runtime_error(std::string("png write: ") + image.message);
  }
  out.resize(size);
  return out;
}

// A 16-bit gray PNG (libpng writes linear 16-bit data as a 16-bit file with its gAMA chunk).
Bytes png16(int width, int height) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = PNG_FORMAT_LINEAR_Y;
  const Bytes pixels = pattern(static_cast<size_t>(width) * static_cast<size_t>(height) * 2, 256);
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data(), 0, nullptr)) {
    throw std::runtime_error(std::string("png16 size: ") + image.message);
  }
  Bytes out(size);
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(), 0, nullptr)) {
    throw std::runtime_error(std::string("png16 write: ") + image.message);
  }
  out.resize(size);
  return out;
}

// A palette PNG of 4 RGBA colours (so with a tRNS chunk).
Bytes png_palette(int width, int height) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = PNG_FORMAT_RGBA_COLORMAP;
  image.colormap_entries = 4;
  const Bytes colormap = {255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0, 9, 9, 9, 255};
  const Bytes pixels = pattern(static_cast<size_t>(width) * static_cast<size_t>(height), 4);
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data(), 0, colormap.data())) {
    throw std::runtime_error(std::string("palette size: ") + image.message);
  }
  Bytes out(size);
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(), 0, colormap.data())) {
    throw std::runtime_error(std::string("palette write: ") + image.message);
  }
  out.resize(size);
  return out;
}

Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

int write_seeds(const fs::path& root) {
  SeedWriter seeds(root);
  const fs::path tmp = root / ".tmp";
  fs::create_directories(tmp);

  // fuzz_idx: [rows, cols] + raw idx file (0 means 28).
  seeds.add("idx", "images_2x3", {2, 3}, idx_images(tmp, 4, 2, 3, false));
  seeds.add("idx", "images_28x28", {0, 0}, idx_images(tmp, 1, 28, 28, false));
  seeds.add("idx", "labels", {0, 0}, idx_labels(tmp, 7, false));
  seeds.add("idx", "header_only", {1, 1}, text(std::string("\0\0\x08\x03\0\0\0\x01\0\0\0\x01\0\0\0\x01", 16)));
  seeds.add("idx", "labels_billions", {0, 0}, text(std::string("\0\0\x08\x01\x7f\xff\xff\xff\x01", 9)));

  // fuzz_idx_gz: [mode, rows, cols, split] + body; mode 0 = file as is, 1/2 = gzip it here.
  seeds.add("idx_gz", "images_gz", {0, 2, 3, 0}, idx_images(tmp, 3, 2, 3, true));
  seeds.add("idx_gz", "labels_gz", {0, 0, 0, 0}, idx_labels(tmp, 9, true));
  seeds.add("idx_gz", "images_compress", {1, 3, 2, 0}, idx_images(tmp, 2, 3, 2, false));
  seeds.add("idx_gz", "labels_two_members", {2, 0, 0, 100}, idx_labels(tmp, 12, false));
  seeds.add("idx_gz", "images_28x28_compress", {1, 0, 0, 0}, idx_images(tmp, 2, 28, 28, false));

  // fuzz_checkpoint: [repair crc?] + file.
  tbgrad::nn::Checkpoint model;
  model.metadata = {{"model", "seed"},    {"epoch", "1"},   {"optimizer", "adam"},
                    {"lr", "0.002"},      {"rng", "1 2 3"}, {"optimizer_steps", "8"}};
  model.tensors.push_back(tensor("conv1.w", "F32", {3, 1, 2, 2}, 4));
  model.tensors.push_back(tensor("conv1.b", "F32", {3}, 4));
  model.tensors.push_back(tensor("optimizer.conv1.w.m", "F32", {3, 1, 2, 2}, 4));
  const Bytes model_bytes = checkpoint(tmp, model);
  seeds.add("checkpoint", "model", {0}, model_bytes);
  seeds.add("checkpoint", "model_repair_crc", {1}, model_bytes);
  tbgrad::nn::Checkpoint dtypes;
  dtypes.metadata = {{"note", "every dtype"}};
  dtypes.tensors.push_back(tensor("f64", "F64", {2, 2}, 8));
  dtypes.tensors.push_back(tensor("i64", "I64", {3}, 8));
  dtypes.tensors.push_back(tensor("u8", "U8", {5}, 1));
  dtypes.tensors.push_back(tensor("scalar", "F32", {}, 4));
  dtypes.tensors.push_back(tensor("empty", "F32", {0, 4}, 4));
  seeds.add("checkpoint", "dtypes", {1}, checkpoint(tmp, dtypes));
  seeds.add("checkpoint", "no_tensors", {1}, checkpoint(tmp, tbgrad::nn::Checkpoint{}));

  // fuzz_image: the file.
  seeds.add("image", "gray.png", {}, png(5, 4, PNG_FORMAT_GRAY, 1));
  seeds.add("image", "rgba.png", {}, png(3, 3, PNG_FORMAT_RGBA, 4));
  seeds.add("image", "rgb_30x20.png", {}, png(30, 20, PNG_FORMAT_RGB, 3));
  seeds.add("image", "gray_28x28.png", {}, png(28, 28, PNG_FORMAT_GRAY, 1));
  seeds.add("image", "p5.pgm", {}, concat(text("P5\n4 3\n255\n"), pattern(12, 256)));
  seeds.add("image", "p5_16bit.pgm", {}, concat(text("P5 2 2 # c\n65535\n"), pattern(8, 256)));
  seeds.add("image", "p2.pgm", {}, text("P2\n# comment\n3 2\n15\n0 5 10\n15 3 # x\n7\n"));
  std::string row = "P2 40 1 1\n";
  for (int i = 0; i < 40; ++i) row += i % 3 ? "1 " : "0 ";
  seeds.add("image", "p2_row.pgm", {}, text(row));

  // fuzz_trainer: the random network generator's choices, one byte each (tests/random_net.hpp):
  // nothing (every choice 0), a flat input straight into linear, and a few patterns.
  seeds.add("trainer", "zeros", {}, {});
  seeds.add("trainer", "flat_linear", {1, 20, 0, 0, 7, 0}, {});
  for (const size_t n : {16, 48, 96}) {
    for (const unsigned modulo : {7u, 256u}) {
      seeds.add("trainer", "pattern_" + std::to_string(n) + "_" + std::to_string(modulo), {},
                pattern(n, modulo));
    }
  }

  // fuzz_cifar: [format] + file (bit 0: CIFAR-100, bit 1: coarse labels, bit 2: read twice).
  {
    const Bytes pixels = pattern(2 * 3072, 256);
    const Bytes labels = {3, 9}, fine = {42, 99};
    tbgrad::data::write_cifar10(tmp / "c10", 2, pixels.data(), labels.data());
    const Bytes c10 = read_all(tmp / "c10");
    tbgrad::data::write_cifar100(tmp / "c100", 2, pixels.data(), labels.data(), fine.data());
    const Bytes c100 = read_all(tmp / "c100");
    seeds.add("cifar", "cifar10", {0}, c10);
    seeds.add("cifar", "cifar10_twice", {4}, c10);
    seeds.add("cifar", "cifar100_fine", {1}, c100);
    seeds.add("cifar", "cifar100_coarse", {3}, c100);
    seeds.add("cifar", "cifar10_cut", {0}, Bytes(c10.begin(), c10.begin() + 3100));
  }

  // fuzz_png: [channels, layout] + file (channels % 5: 0 = the file's own; layout bit 0: two
  // classes).
  seeds.add("png", "gray", {0, 0}, png(5, 4, PNG_FORMAT_GRAY, 1));
  seeds.add("png", "gray_as_rgb", {3, 1}, png(4, 4, PNG_FORMAT_GRAY, 1));
  seeds.add("png", "ga", {0, 0}, png(3, 2, PNG_FORMAT_GA, 2));
  seeds.add("png", "rgb", {0, 1}, png(6, 3, PNG_FORMAT_RGB, 3));
  seeds.add("png", "rgba", {0, 0}, png(3, 3, PNG_FORMAT_RGBA, 4));
  seeds.add("png", "rgba_as_rgb", {3, 0}, png(3, 3, PNG_FORMAT_RGBA, 4));
  seeds.add("png", "rgb_as_gray", {1, 0}, png(8, 8, PNG_FORMAT_RGB, 3));
  seeds.add("png", "rgb_32x32", {0, 1}, png(32, 32, PNG_FORMAT_RGB, 3));
  seeds.add("png", "linear16", {0, 0}, png16(4, 3));
  seeds.add("png", "palette", {0, 0}, png_palette(5, 2));

  fs::remove_all(tmp);
  return seeds.count();
}

}  // namespace tbgrad_fuzz
