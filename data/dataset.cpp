#include "data/dataset.hpp"

#include <algorithm>
#include <numeric>
#include <string>

namespace tbgrad::data {

void load_examples(const Dataset& data, std::span<const std::int64_t> indices, const Tensor& images,
                   const Tensor& labels) {
  const auto n = static_cast<std::int64_t>(indices.size());
  const std::int64_t size = data.example_size();
  if (images.dtype() != DType::kF32 || images.numel() != n * size ||
      labels.dtype() != DType::kI32 || labels.numel() != n) {
    throw DataError("load_examples: " + std::to_string(n) + " examples of " + std::to_string(size) +
                    " pixels need f32 images of " + std::to_string(n * size) +
                    " elements and i32 labels of " + std::to_string(n) + ", got " +
                    images.shape().str() + " and " + labels.shape().str());
  }
  float* img = images.data<float>();
  std::int32_t* lab = labels.data<std::int32_t>();
  constexpr float kScale = 1.0f / 255.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t k = indices[static_cast<std::size_t>(i)];
    if (k < 0 || k >= data.count) {
      throw DataError("load_examples: example " + std::to_string(k) +
                      " is outside the data set's " + std::to_string(data.count));
    }
    const std::uint8_t* src = data.images.data() + k * size;
    float* dst = img + i * size;
    for (std::int64_t j = 0; j < size; ++j) dst[j] = static_cast<float>(src[j]) * kScale;
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
    __builtin_prefetch(data.labels.data() + k);
  }
}

Batcher::Batcher(const Dataset& data, std::int64_t batch_size, std::int64_t limit)
    : data_(data), batch_(batch_size) {
  const std::int64_t n = limit > 0 ? std::min(limit, data.count) : data.count;
  if (n <= 0) throw DataError("the data set is empty");
  if (batch_size <= 0)
    throw DataError("batch size must be positive, got " + std::to_string(batch_size));
  batch_ = std::min(batch_size, n);
  order_.resize(static_cast<std::size_t>(n));
  in_order();
  images_ = Tensor(Shape{batch_, 1, data.rows, data.cols}, DType::kF32);
  labels_ = Tensor(Shape{batch_}, DType::kI32);
  if (const std::int64_t rest = n % batch_) {
    tail_images_ = Tensor(Shape{rest, 1, data.rows, data.cols}, DType::kF32);
    tail_labels_ = Tensor(Shape{rest}, DType::kI32);
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
  load_examples(data_, batch(b), images(b), labels(b));
}

}  // namespace tbgrad::data
