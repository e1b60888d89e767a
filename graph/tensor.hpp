// Tensors: a shape, a dtype and (possibly shared) 64-byte aligned storage.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace tbgrad {

// Base of every error the library throws on bad use, so callers can catch one type.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A value whose shape or dtype breaks an op's rule, detected when the graph is built.
class ShapeError : public Error {
 public:
  using Error::Error;
};

enum class DType : std::uint8_t { kF32, kF64, kI32 };

std::size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "f32", "f64", "i32"

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::kF32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::kF64;
}
template <>
constexpr DType dtype_of<std::int32_t>() {
  return DType::kI32;
}

// A shape of at most kMaxRank dimensions, stored inline so copying a shape (or a tensor view)
// never touches the heap: the executor hands out tensors on every step.
class Shape {
 public:
  static constexpr int kMaxRank = 6;

  Shape() = default;
  // Throws ShapeError for a negative dimension, a rank above kMaxRank, or an element count
  // over checked::kMaxElements (graph/checked.hpp).
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(std::span<const std::int64_t> dims);

  int rank() const { return rank_; }
  std::int64_t operator[](int i) const { return dims_[static_cast<std::size_t>(i)]; }
  std::int64_t& operator[](int i) { return dims_[static_cast<std::size_t>(i)]; }
  std::int64_t numel() const;
  std::span<const std::int64_t> dims() const { return {dims_.data(), static_cast<std::size_t>(rank_)}; }

  bool operator==(const Shape& other) const;
  std::string str() const;  // "[32,1,28,28]"; a scalar is "[]"

 private:
  std::array<std::int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

// A tensor is a cheap handle: copies share storage. Layout is dense row-major (NCHW for images).
class Tensor {
 public:
  Tensor() = default;
  // Allocates zero-filled, 64-byte aligned storage.
  Tensor(Shape shape, DType dtype);
  // A view of memory owned elsewhere (the executor's arena); the owner must outlive the view.
  static Tensor view(Shape shape, DType dtype, void* data);

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || numel() == 0; }

  void* raw() const { return data_; }
  template <typename T>
  T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(data_);
  }
  template <typename T>
  std::span<T> span() const {
    return {data<T>(), static_cast<std::size_t>(numel())};
  }

  // Element i (flat index) converted to double; for tests and tools, not for kernels. Both
  // check the index (and that the tensor has storage) and throw Error otherwise.
  double at(std::int64_t i) const;
  void set(std::int64_t i, double v) const;

  Tensor clone() const;                    // deep copy into fresh storage
  void copy_from(const Tensor& src) const;  // same shape and dtype required
  void fill(double v) const;

 private:
  void check_dtype(DType want) const;
  void check_index(std::int64_t i, const char* who) const;

  Shape shape_;
  DType dtype_ = DType::kF32;
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
};

// Aligned heap buffer used by tensors and the executor's arena.
std::shared_ptr<void> allocate_aligned(std::size_t bytes);
inline constexpr std::size_t kTensorAlignment = 64;

}  // namespace tbgrad
