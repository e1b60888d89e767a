// An in-memory data set of byte images with class labels (or float targets: regression,
// multi-hot labels), and the batcher that feeds it to a model: a seeded order per epoch,
// batches as tensors, the last batch short when the batch size does not divide the data set,
// optional per-channel normalisation and seeded augmentation (random crop with zero padding,
// horizontal flip). Nothing here allocates once constructed.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include "tbgrad/graph/rng.hpp"
#include "tbgrad/graph/tensor.hpp"

namespace tbgrad::data {

// Anything wrong with a data file or data set: missing, unreadable, malformed or inconsistent.
// For a file, the message starts with the file's path, then says what is wrong.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Dataset {
  int64_t count = 0;
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t> images;  // [count, channels, rows, cols], row-major, one byte per pixel.
  std::vector<uint8_t> labels;  // [count], class indices.
  int channels = 1;             // planes per image (1: gray, 3: RGB), each rows x cols
  // Per-channel normalisation applied by load_examples, as torchvision's Normalize after
  // ToTensor: (pixel / 255 - mean[c]) / stddev[c]. Both empty (the default): pixel / 255 only.
  // Otherwise both hold `channels` values and every stddev is positive and finite
  // (load_examples throws DataError when not).
  std::vector<float> mean, stddev;
  // Float targets, for models whose labels are an f32 input (regression targets, multi-hot
  // labels): [count, target_shape...], row-major. When not empty, load_examples fills an f32
  // labels tensor from them (the byte labels may then be empty); it throws DataError unless
  // targets holds count * target_size() values. An empty target_shape: one value per example.
  std::vector<float> targets;
  std::vector<std::int64_t> target_shape;

  std::int64_t example_size() const { return std::int64_t{channels} * rows * cols; }
  std::int64_t target_size() const {
    std::int64_t n = 1;
    for (const std::int64_t d : target_shape) n *= d;
    return n;
  }
};

// Each channel's mean and (population) standard deviation of pixel / 255 over the data set's
// first `limit` examples (0: all), summed in a fixed order in double: the values to put in
// Dataset::mean and Dataset::stddev. Throws DataError for an empty set.
struct ChannelStats {
  std::vector<float> mean, stddev;
};
ChannelStats channel_stats(const Dataset& data, std::int64_t limit = 0);

// Seeded augmentation applied as examples are loaded (torchvision's RandomCrop(size, padding=pad)
// followed by RandomHorizontalFlip()): each image is padded with `pad` zero pixels on every side,
// a rows x cols window of it is taken at a random offset in [0, 2 * pad] on each axis, and with
// probability 0.5 it is mirrored left to right. The padding is pixel value 0, normalised like
// any pixel. Off by default. The draws of an example are a counter-based hash of (seed, epoch,
// the example's index in the data set): they depend on nothing else (not the batch, the thread,
// the micro-batch or the rank that loads it), so results are the same for any thread count.
struct Augment {
  int pad = 0;        // 0: no crop
  bool flip = false;  // horizontal flip with probability 0.5
  std::uint64_t seed = 0;

  bool enabled() const { return pad > 0 || flip; }
  bool operator==(const Augment&) const = default;
};

// What `augment` does to example `index` in epoch `epoch`: the crop window's top-left corner in
// the padded image (dy, dx in [0, 2 * pad]) and whether it is flipped.
struct AugmentDraw {
  int dy = 0, dx = 0;
  bool flip = false;
};
AugmentDraw augment_draw(const Augment& augment, std::uint64_t epoch, std::int64_t index);

// Copies the pixels of examples indices[0..n) of `data` into images (f32, n * example_size()
// elements, [n, channels, rows, cols]), scaled to [0, 1] and normalised by the data set's
// mean/stddev, each augmented by `augment` with the draws of (augment.seed, epoch, its index).
// Throws DataError when the tensor does not hold n examples, an index is outside the data set,
// the normalisation is malformed or augment.pad is negative or over 65535. Does not allocate.
void load_images(const Dataset& data, std::span<const std::int64_t> indices, const Tensor& images,
                 const Augment& augment = {}, std::uint64_t epoch = 0);

// Copies examples indices[0..n) of `data` into images (f32, n * example_size() elements, each
// pixel / 255, so in [0, 1]) and labels: [n] i32 class indices from Dataset::labels, or, for
// an f32 labels tensor, n * target_size() values from Dataset::targets. Throws DataError when
// the tensors do not hold n examples, an index is outside the data set, or the data set lacks
// the labels asked for (targets not count * target_size() values, fewer byte labels than
// examples). Does not allocate.
void load_examples(const Dataset& data, std::span<const std::int64_t> indices, const Tensor& images,
                   const Tensor& labels);
// The same, the images augmented (load_images).
void load_examples(const Dataset& data, std::span<const std::int64_t> indices, const Tensor& images,
                   const Tensor& labels, const Augment& augment, std::uint64_t epoch);

// Asks the CPU to bring examples indices[0..n)'s pixels and labels into its caches, so that a
// later load_examples of them does not wait on memory (the data set is larger than the caches
// and read in shuffled order). A hint: no effect on results; indices outside the set are
// skipped (load_examples reports them).
void prefetch_examples(const Dataset& data, std::span<const std::int64_t> indices);

// Batches of a data set's first `size` examples: shuffle() (or in_order()) sets the epoch's order,
// then batch(b) gives batch b's example indices, or images(b) / labels(b) after fill(b) its
// tensors ([batch, channels, rows, cols] and [batch] i32, or [batch, target_shape...] f32 for a
// data set with targets; the last batch's are its own shorter tensors), augmented by `augment` with the draws of set_epoch()'s epoch. nn::train_epoch does
// not fill batches: the trainer loads them (TrainerOptions::augment).
class Batcher {
 public:
  // limit 0: the whole data set. Throws DataError for an empty set or a negative augment.pad.
  Batcher(const Dataset& data, std::int64_t batch_size, std::int64_t limit = 0,
          const Augment& augment = {});

  // The epoch fill() keys the augmentation draws by (0 until set).
  void set_epoch(std::uint64_t epoch) { epoch_ = epoch; }
  std::uint64_t epoch() const { return epoch_; }
  const Augment& augment() const { return augment_; }

  // Fisher-Yates from the identity, drawing from rng: rng's state alone fixes the order, so a
  // run resumed from a saved generator sees the same batches as one that never stopped.
  void shuffle(Rng& rng);
  void in_order();

  const Dataset& dataset() const { return data_; }
  std::int64_t size() const { return static_cast<std::int64_t>(order_.size()); }
  std::int64_t batch_size() const { return batch_; }
  std::int64_t num_batches() const { return (size() + batch_ - 1) / batch_; }
  // Example indices of batch b; the last batch may be shorter than batch_size().
  std::span<const std::int64_t> batch(std::int64_t b) const;

  // Loads batch b into the tensors images(b) and labels(b) return.
  void fill(std::int64_t b);
  const Tensor& images(std::int64_t b) const { return is_tail(b) ? tail_images_ : images_; }
  const Tensor& labels(std::int64_t b) const { return is_tail(b) ? tail_labels_ : labels_; }

 private:
  bool is_tail(std::int64_t b) const { return (b + 1) * batch_ > size(); }

  const Dataset& data_;
  std::int64_t batch_;
  Augment augment_;
  std::uint64_t epoch_ = 0;
  std::vector<std::int64_t> order_;
  Tensor images_, labels_, tail_images_, tail_labels_;
};

}  // namespace tbgrad::data
