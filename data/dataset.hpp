// An in-memory data set of byte images with class labels, and the batcher that feeds it to a
// model: a seeded order per epoch, batches as tensors, the last batch short when the batch
// size does not divide the data set. Nothing here allocates once constructed.
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
  std::vector<uint8_t> images;  // [count, rows*cols], row-major, one byte per pixel.
  std::vector<uint8_t> labels;  // [count], class indices.

  std::int64_t example_size() const { return std::int64_t{rows} * cols; }
};

// Copies examples indices[0..n) of `data` into images (f32, n * example_size() elements, each
// pixel / 255, so in [0, 1]) and labels ([n] i32). Throws DataError when the tensors do not hold
// n examples or an index is outside the data set. Does not allocate.
void load_examples(const Dataset& data, std::span<const std::int64_t> indices, const Tensor& images,
                   const Tensor& labels);

// Asks the CPU to bring examples indices[0..n)'s pixels and labels into its caches, so that a
// later load_examples of them does not wait on memory (the data set is larger than the caches
// and read in shuffled order). A hint: no effect on results; indices outside the set are
// skipped (load_examples reports them).
void prefetch_examples(const Dataset& data, std::span<const std::int64_t> indices);

// Batches of a data set's first `size` examples: shuffle() (or in_order()) sets the epoch's order,
// then batch(b) gives batch b's example indices, or images(b) / labels(b) after fill(b) its
// tensors ([batch, 1, rows, cols] and [batch]; the last batch's are its own shorter tensors).
class Batcher {
 public:
  // limit 0: the whole data set. Throws DataError for an empty set.
  Batcher(const Dataset& data, std::int64_t batch_size, std::int64_t limit = 0);

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
  std::vector<std::int64_t> order_;
  Tensor images_, labels_, tail_images_, tail_labels_;
};

}  // namespace tbgrad::data
