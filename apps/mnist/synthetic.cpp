#include "apps/mnist/synthetic.hpp"

#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>

namespace tbgrad::mnist {
namespace {

namespace fs = std::filesystem;

constexpr int kSize = kImageRows;  // Square images; kImageRows == kImageCols.
constexpr int kCenter = kSize / 2;
constexpr int kMaxShift = 3;     // Pixels a shape may move off centre in each axis.
constexpr int kMaxNoise = 50;    // Uniform noise added to every pixel.
constexpr int kMinInk = 150;     // Weakest stroke; stays above noise-only pixels.
constexpr int kMaxSpeckles = 6;  // Stray bright pixels, so "any ink here" is not a rule.
constexpr int kMinSpeckle = 80;
constexpr int kMaxSpeckle = 200;

// Draws from std::mt19937_64 without std::uniform_*_distribution, whose algorithms
// differ between standard libraries and would make "same seed" mean different data.
class Random {
 public:
  explicit Random(uint64_t seed) : engine_(seed) {}

  // Uniform in [0, bound): rejecting the lowest 2^64 mod bound values removes the bias
  // a bare modulo would have.
  uint64_t below(uint64_t bound) {
    const uint64_t rejected = (0 - bound) % bound;
    for (;;) {
      const uint64_t value = engine_();
      if (value >= rejected) return value % bound;
    }
  }

  // Uniform in [low, high].
  int between(int low, int high) {
    return low + static_cast<int>(below(static_cast<uint64_t>(high - low) + 1));
  }

 private:
  std::mt19937_64 engine_;
};

// One image being drawn: ink is max-combined so overlapping strokes do not saturate.
class Canvas {
 public:
  explicit Canvas(uint8_t* pixels) : pixels_(pixels) {}

  void plot(int row, int col, int ink) {
    if (row < 0 || row >= kSize || col < 0 || col >= kSize) return;
    uint8_t& pixel = pixels_[row * kSize + col];
    pixel = static_cast<uint8_t>(std::max<int>(pixel, ink));
  }

  // Fills rows [top, bottom) x cols [left, right), clipped to the image.
  void fill(int top, int left, int bottom, int right, int ink) {
    for (int row = top; row < bottom; ++row) {
      for (int col = left; col < right; ++col) plot(row, col, ink);
    }
  }

 private:
  uint8_t* pixels_;
};

void draw_shape(Canvas& canvas, SyntheticShape shape, int cy, int cx, int ink, Random& random) {
  // Small per-image size changes, on top of the shift, so no pixel is decisive alone.
  const int thickness = random.between(2, 4);
  const int half_length = random.between(8, 10);
  switch (shape) {
    case SyntheticShape::kHorizontalBar:
      canvas.fill(cy - thickness / 2, cx - half_length, cy - thickness / 2 + thickness,
                  cx + half_length, ink);
      break;
    case SyntheticShape::kVerticalBar:
      canvas.fill(cy - half_length, cx - thickness / 2, cy + half_length,
                  cx - thickness / 2 + thickness, ink);
      break;
    case SyntheticShape::kDiagonalDown:
    case SyntheticShape::kDiagonalUp: {
      const int direction = shape == SyntheticShape::kDiagonalDown ? 1 : -1;
      for (int step = -half_length; step <= half_length; ++step) {
        for (int width = 0; width < thickness; ++width) {
          canvas.plot(cy + step, cx + direction * step + width - thickness / 2, ink);
        }
      }
      break;
    }
    case SyntheticShape::kBoxOutline: {
      const int half = half_length - 1;
      const int border = std::min(thickness, 3);
      canvas.fill(cy - half, cx - half, cy - half + border, cx + half, ink);
      canvas.fill(cy + half - border, cx - half, cy + half, cx + half, ink);
      canvas.fill(cy - half, cx - half, cy + half, cx - half + border, ink);
      canvas.fill(cy - half, cx + half - border, cy + half, cx + half, ink);
      break;
    }
    case SyntheticShape::kFilledSquare: {
      const int half = random.between(4, 6);
      canvas.fill(cy - half, cx - half, cy + half, cx + half, ink);
      break;
    }
    case SyntheticShape::kCross: {
      const int arm = half_length - 2;
      canvas.fill(cy - thickness / 2, cx - arm, cy - thickness / 2 + thickness, cx + arm, ink);
      canvas.fill(cy - arm, cx - thickness / 2, cy + arm, cx - thickness / 2 + thickness, ink);
      break;
    }
    case SyntheticShape::kDot: {
      const int radius = random.between(2, 3);
      for (int dy = -radius; dy <= radius; ++dy) {
        for (int dx = -radius; dx <= radius; ++dx) {
          if (dy * dy + dx * dx <= radius * radius) canvas.plot(cy + dy, cx + dx, ink);
        }
      }
      break;
    }
    case SyntheticShape::kTopHalf:
      canvas.fill(0, 0, cy, kSize, ink);
      break;
    case SyntheticShape::kLeftHalf:
      canvas.fill(0, 0, kSize, cx, ink);
      break;
  }
}

void render(uint8_t* pixels, SyntheticShape shape, Random& random) {
  Canvas canvas(pixels);
  const int cy = kCenter + random.between(-kMaxShift, kMaxShift);
  const int cx = kCenter + random.between(-kMaxShift, kMaxShift);
  const int ink = random.between(kMinInk, 255);
  draw_shape(canvas, shape, cy, cx, ink, random);
  const int speckles = random.between(0, kMaxSpeckles);
  for (int i = 0; i < speckles; ++i) {
    // Separate statements: the evaluation order of function arguments is unspecified,
    // and drawing them inline would make the bytes depend on the compiler.
    const int row = random.between(0, kSize - 1);
    const int col = random.between(0, kSize - 1);
    const int brightness = random.between(kMinSpeckle, kMaxSpeckle);
    canvas.plot(row, col, brightness);
  }
  // Noise on every pixel, stroke included, so the model cannot key on exact values.
  for (int i = 0; i < kSize * kSize; ++i) {
    const int noisy = pixels[i] + random.between(0, kMaxNoise);
    pixels[i] = static_cast<uint8_t>(std::min(noisy, 255));
  }
}

void check_consistent(const Dataset& dataset, const char* which) {
  const auto pixels_per_image = static_cast<uint64_t>(dataset.rows) * dataset.cols;
  if (dataset.count < 0 || dataset.rows <= 0 || dataset.cols <= 0 ||
      dataset.images.size() != static_cast<uint64_t>(dataset.count) * pixels_per_image ||
      dataset.labels.size() != static_cast<uint64_t>(dataset.count)) {
    throw std::invalid_argument(std::string("write_dataset: ") + which +
                                " dataset's sizes do not match its count, rows and cols");
  }
}

void remove_stale(const fs::path& file) {
  std::error_code error;
  fs::remove(file, error);
  if (error) throw DataError(file.string() + ": cannot remove stale file: " + error.message());
}

void write_split(const fs::path& dir, Split split, const Dataset& dataset, bool gzip) {
  const fs::path images_raw = dir / images_file_name(split);
  const fs::path labels_raw = dir / labels_file_name(split);
  const fs::path images_gz = dir / (std::string(images_file_name(split)) + ".gz");
  const fs::path labels_gz = dir / (std::string(labels_file_name(split)) + ".gz");
  if (gzip) {
    write_idx_images_gz(images_gz, dataset.count, dataset.rows, dataset.cols,
                        dataset.images.data());
    write_idx_labels_gz(labels_gz, dataset.count, dataset.labels.data());
    remove_stale(images_raw);
    remove_stale(labels_raw);
  } else {
    write_idx_images(images_raw, dataset.count, dataset.rows, dataset.cols, dataset.images.data());
    write_idx_labels(labels_raw, dataset.count, dataset.labels.data());
    remove_stale(images_gz);
    remove_stale(labels_gz);
  }
}

}  // namespace

Dataset make_synthetic(int64_t count, uint64_t seed) {
  if (count < 0) throw std::invalid_argument("make_synthetic: count must be non-negative");
  Random random(seed);
  Dataset dataset;
  dataset.count = count;
  dataset.rows = kImageRows;
  dataset.cols = kImageCols;
  const auto pixels_per_image = static_cast<size_t>(kImageRows) * kImageCols;
  dataset.images.assign(static_cast<size_t>(count) * pixels_per_image, 0);
  dataset.labels.resize(static_cast<size_t>(count));
  for (size_t i = 0; i < dataset.labels.size(); ++i) {
    const auto label = static_cast<uint8_t>(random.below(kNumClasses));
    dataset.labels[i] = label;
    render(dataset.images.data() + i * pixels_per_image, static_cast<SyntheticShape>(label),
           random);
  }
  return dataset;
}

void write_dataset(const fs::path& dir, const Dataset& train, const Dataset& test, bool gzip) {
  check_consistent(train, "train");
  check_consistent(test, "test");
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) throw DataError(dir.string() + ": cannot create directory: " + error.message());
  write_split(dir, Split::kTrain, train, gzip);
  write_split(dir, Split::kTest, test, gzip);
}

}  // namespace tbgrad::mnist
