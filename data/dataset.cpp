#include "data/dataset.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace tbgrad::data {

namespace {

constexpr float kScale = 1.0f / 255.0f;
constexpr int kMaxPad = 65535;

// splitmix64's finaliser: a bijection of 64-bit words whose outputs for consecutive inputs look
// independent, so hashing (seed, epoch, index) through it is a counter-based generator.
std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A uniform integer in [0, n) from 32 random bits (multiply-shift; the bias, n / 2^32, is
// immaterial for the small n of a crop offset).
int below(std::uint64_t bits32, std::uint64_t n) {
  return static_cast<int>((bits32 * n) >> 32);
}

void check_normalization(const Dataset& data) {
  if (data.mean.empty() && data.stddev.empty()) return;
  const auto c = static_cast<std::size_t>(std::max(data.channels, 0));
  if (data.mean.size() != c || data.stddev.size() != c) {
    throw DataError("normalisation: the data set has " + std::to_string(data.channels) +
                    " channels, but mean has " + std::to_string(data.mean.size()) +
                    " values and stddev " + std::to_string(data.stddev.size()));
  }
  for (std::size_t i = 0; i < c; ++i) {
    if (!std::isfinite(data.mean[i]) || !std::isfinite(data.stddev[i]) || !(data.stddev[i] > 0)) {
      throw DataError("normalisation: channel " + std::to_string(i) + " has mean " +
                      std::to_string(data.mean[i]) + " and stddev " +
                      std::to_string(data.stddev[i]) +
                      " (the mean must be finite, the stddev positive and finite)");
    }
  }
}

void check_augment(const Augment& augment) {
  if (augment.pad < 0 || augment.pad > kMaxPad) {
    throw DataError("augment: pad must be in [0, " + std::to_string(kMaxPad) + "], got " +
                    std::to_string(augment.pad));
  }
}

// One example's pixels, src [channels, rows, cols] bytes to dst floats: crop window (dy, dx) of
// the image padded by `pad`, mirrored when `flip`, each value (pixel / 255 - m) / s.
void copy_augmented(const Dataset& data, const std::uint8_t* src, float* dst,
                    const AugmentDraw& draw, int pad) {
  const std::int64_t rows = data.rows, cols = data.cols;
  const std::int64_t plane = rows * cols;
  const bool normalize = !data.mean.empty();
  for (int c = 0; c < data.channels; ++c) {
    // x - 0 and x / 1 are exact: without normalisation the values are pixel / 255's bits.
    const float m = normalize ? data.mean[static_cast<std::size_t>(c)] : 0.0f;
    const float s = normalize ? data.stddev[static_cast<std::size_t>(c)] : 1.0f;
    const float zero = (0.0f * kScale - m) / s;
    const std::uint8_t* in = src + c * plane;
    float* out = dst + c * plane;
    for (std::int64_t y = 0; y < rows; ++y) {
      const std::int64_t sy = y + draw.dy - pad;
      float* row = out + y * cols;
      if (sy < 0 || sy >= rows) {
        std::fill(row, row + cols, zero);
        continue;
      }
      const std::uint8_t* in_row = in + sy * cols;
      for (std::int64_t x = 0; x < cols; ++x) {
        const std::int64_t sx = (draw.flip ? cols - 1 - x : x) + draw.dx - pad;
        row[x] = sx < 0 || sx >= cols ? zero : (static_cast<float>(in_row[sx]) * kScale - m) / s;
      }
    }
  }
}

// Dataset::targets, when not empty, against count and target_shape.
void check_targets(const Dataset& data, const char* who) {
  if (data.targets.empty()) return;
  for (const std::int64_t d : data.target_shape) {
    if (d < 1) {
      throw DataError(std::string(who) + ": Dataset::target_shape has a dimension of " +
                      std::to_string(d) + "; each must be positive");
    }
  }
  const std::int64_t t = data.target_size();
  if (data.count < 0 || data.targets.size() != static_cast<std::size_t>(data.count * t)) {
    throw DataError(std::string(who) + ": the data set's " + std::to_string(data.count) +
                    " examples of " + std::to_string(t) +
                    " target values each (Dataset::target_shape) need " +
                    std::to_string(data.count * t) + " targets, but Dataset::targets holds " +
                    std::to_string(data.targets.size()));
  }
}

}  // namespace

AugmentDraw augment_draw(const Augment& augment, std::uint64_t epoch, std::int64_t index) {
  const std::uint64_t h = mix(mix(mix(augment.seed) ^ epoch) ^ static_cast<std::uint64_t>(index));
  const std::uint64_t h2 = mix(h);
  AugmentDraw d;
  if (augment.pad > 0) {
    const auto n = static_cast<std::uint64_t>(2 * augment.pad + 1);
    d.dy = below(h & 0xffffffffULL, n);
    d.dx = below(h >> 32, n);
  } else {
    d.dy = d.dx = 0;
  }
  d.flip = augment.flip && (h2 & 1) != 0;
  return d;
}

ChannelStats channel_stats(const Dataset& data, std::int64_t limit) {
  const std::int64_t n = limit > 0 ? std::min(limit, data.count) : data.count;
  if (n <= 0) throw DataError("channel_stats: the data set is empty");
  if (data.channels < 1) {
    throw DataError("channel_stats: the data set has " + std::to_string(data.channels) +
                    " channels");
  }
  const std::int64_t plane = std::int64_t{data.rows} * data.cols;
  const std::int64_t size = data.example_size();
  if (plane <= 0 || static_cast<std::uint64_t>(n * size) > data.images.size()) {
    throw DataError("channel_stats: the data set's images hold " +
                    std::to_string(data.images.size()) + " bytes, not " + std::to_string(n) +
                    " examples of " + std::to_string(size));
  }
  ChannelStats stats;
  for (int c = 0; c < data.channels; ++c) {
    // Integer sums: exact, so the order they are taken in cannot matter.
    unsigned __int128 sum = 0, squares = 0;
    for (std::int64_t k = 0; k < n; ++k) {
      const std::uint8_t* p = data.images.data() + k * size + c * plane;
      for (std::int64_t j = 0; j < plane; ++j) {
        sum += p[j];
        squares += std::uint32_t{p[j]} * p[j];
      }
    }
    const double count = static_cast<double>(n) * static_cast<double>(plane);
    const double mean = static_cast<double>(sum) / count / 255.0;
    const double var =
        std::max(0.0, static_cast<double>(squares) / count / (255.0 * 255.0) - mean * mean);
    stats.mean.push_back(static_cast<float>(mean));
    stats.stddev.push_back(static_cast<float>(std::sqrt(var)));
  }
  return stats;
}

void load_images(const Dataset& data, std::span<const std::int64_t> indices, const Tensor& images,
                 const Augment& augment, std::uint64_t epoch) {
  const auto n = static_cast<std::int64_t>(indices.size());
  const std::int64_t size = data.example_size();
  if (images.dtype() != DType::kF32 || images.numel() != n * size) {
    throw DataError("load_images: " + std::to_string(n) + " examples of " + std::to_string(size) +
                    " values need f32 images of " + std::to_string(n * size) + " elements, got " +
                    images.shape().str() + " " + dtype_name(images.dtype()));
  }
  check_normalization(data);
  check_augment(augment);
  float* img = images.data<float>();
  const bool normalize = !data.mean.empty();
  const std::int64_t plane = std::int64_t{data.rows} * data.cols;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t k = indices[static_cast<std::size_t>(i)];
    if (k < 0 || k >= data.count) {
      throw DataError("load_examples: example " + std::to_string(k) +
                      " is outside the data set's " + std::to_string(data.count));
    }
    const std::uint8_t* src = data.images.data() + k * size;
    float* dst = img + i * size;
    if (augment.enabled()) {
      copy_augmented(data, src, dst, augment_draw(augment, epoch, k), augment.pad);
    } else if (normalize) {
      for (int c = 0; c < data.channels; ++c) {
        const float m = data.mean[static_cast<std::size_t>(c)];
        const float s = data.stddev[static_cast<std::size_t>(c)];
        const std::uint8_t* in = src + c * plane;
        float* out = dst + c * plane;
        for (std::int64_t j = 0; j < plane; ++j) out[j] = (static_cast<float>(in[j]) * kScale - m) / s;
      }
    } else {
      for (std::int64_t j = 0; j < size; ++j) dst[j] = static_cast<float>(src[j]) * kScale;
    }
  }
}

void load_examples(const Dataset& data, std::span<const std::int64_t> indices, const Tensor& images,
                   const Tensor& labels) {
  load_examples(data, indices, images, labels, Augment{}, 0);
}

void load_examples(const Dataset& data, std::span<const std::int64_t> indices, const Tensor& images,
                   const Tensor& labels, const Augment& augment, std::uint64_t epoch) {
  const auto n = static_cast<std::int64_t>(indices.size());
  const std::int64_t size = data.example_size();
  if (labels.dtype() == DType::kF32) {
    // Float targets (Dataset::targets).
    if (data.targets.empty()) {
      throw DataError("load_examples: f32 labels need the data set's float targets, but "
                      "Dataset::targets is empty");
    }
    check_targets(data, "load_examples");
    const std::int64_t t = data.target_size();
    if (images.dtype() != DType::kF32 || images.numel() != n * size || labels.numel() != n * t) {
      throw DataError("load_examples: " + std::to_string(n) + " examples of " +
                      std::to_string(size) + " pixels and " + std::to_string(t) +
                      " targets need f32 images of " + std::to_string(n * size) +
                      " elements and f32 labels of " + std::to_string(n * t) + ", got " +
                      images.shape().str() + " and " + labels.shape().str());
    }
    load_images(data, indices, images, augment, epoch);
    float* out = labels.data<float>();
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t k = indices[static_cast<std::size_t>(i)];
      const float* src = data.targets.data() + k * t;
      std::copy(src, src + t, out + i * t);
    }
    return;
  }
  if (images.dtype() != DType::kF32 || images.numel() != n * size ||
      labels.dtype() != DType::kI32 || labels.numel() != n) {
    throw DataError("load_examples: " + std::to_string(n) + " examples of " + std::to_string(size) +
                    " pixels need f32 images of " + std::to_string(n * size) +
                    " elements and i32 labels of " + std::to_string(n) + ", got " +
                    images.shape().str() + " and " + labels.shape().str());
  }
  if (data.labels.size() < static_cast<std::size_t>(data.count)) {
    throw DataError("load_examples: i32 labels need the data set's class labels, one per "
                    "example (" + std::to_string(data.count) + "), but Dataset::labels holds " +
                    std::to_string(data.labels.size()) +
                    (data.targets.empty() ? "" : " (it has float targets: give the model an f32 "
                                                 "labels input)"));
  }
  load_images(data, indices, images, augment, epoch);
  std::int32_t* lab = labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t k = indices[static_cast<std::size_t>(i)];
    lab[i] = data.labels[static_cast<std::size_t>(k)];
  }
}

void prefetch_examples(const Dataset& data, std::span<const std::int64_t> indices) {
  constexpr std::int64_t kLine = 64;
  const std::int64_t size = data.example_size();
  for (const std::int64_t k : indices) {
    if (k < 0 || k >= data.count) continue;
    const std::uint8_t* p = data.images.data() + k * size;
    for (std::int64_t b = 0; b < size; b += kLine) __builtin_prefetch(p + b);
    __builtin_prefetch(p + size - 1);  // the last line, when the image does not start one
    if (!data.targets.empty()) {
      __builtin_prefetch(data.targets.data() + k * data.target_size());
    } else {
      __builtin_prefetch(data.labels.data() + k);
    }
  }
}

Batcher::Batcher(const Dataset& data, std::int64_t batch_size, std::int64_t limit,
                 const Augment& augment)
    : data_(data), batch_(batch_size), augment_(augment) {
  const std::int64_t n = limit > 0 ? std::min(limit, data.count) : data.count;
  if (n <= 0) throw DataError("the data set is empty");
  if (batch_size <= 0)
    throw DataError("batch size must be positive, got " + std::to_string(batch_size));
  check_augment(augment);
  check_targets(data, "Batcher");
  batch_ = std::min(batch_size, n);
  order_.resize(static_cast<std::size_t>(n));
  in_order();
  images_ = Tensor(Shape{batch_, data.channels, data.rows, data.cols}, DType::kF32);
  // [b] i32 class indices, or [b, target_shape...] f32 targets.
  const auto labels_for = [&](std::int64_t b) {
    if (data.targets.empty()) return Tensor(Shape{b}, DType::kI32);
    std::vector<std::int64_t> dims = {b};
    dims.insert(dims.end(), data.target_shape.begin(), data.target_shape.end());
    return Tensor(Shape{std::span<const std::int64_t>(dims)}, DType::kF32);
  };
  labels_ = labels_for(batch_);
  if (const std::int64_t rest = n % batch_) {
    tail_images_ = Tensor(Shape{rest, data.channels, data.rows, data.cols}, DType::kF32);
    tail_labels_ = labels_for(rest);
  }
}

void Batcher::in_order() {
  std::iota(order_.begin(), order_.end(), 0);
}

void Batcher::shuffle(Rng& rng) {
  in_order();
  for (std::int64_t i = size() - 1; i > 0; --i) {
    std::swap(order_[static_cast<std::size_t>(i)],
              order_[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i + 1)))]);
  }
}

std::span<const std::int64_t> Batcher::batch(std::int64_t b) const {
  const std::int64_t start = b * batch_;
  const std::int64_t len = std::min(batch_, size() - start);
  return {order_.data() + start, static_cast<std::size_t>(len)};
}

void Batcher::fill(std::int64_t b) {
  load_examples(data_, batch(b), images(b), labels(b), augment_, epoch_);
}

}  // namespace tbgrad::data
