#include "graph/tensor.hpp"

#include "graph/checked.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

namespace tbgrad {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kF64:
      return 8;
    case DType::kI32:
      return 4;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kF64:
      return "f64";
    case DType::kI32:
      return "i32";
  }
  return "?";
}

Shape::Shape(std::initializer_list<std::int64_t> dims)
    : Shape(std::span<const std::int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const std::int64_t> dims) {
  if (dims.size() > static_cast<std::size_t>(kMaxRank)) {
    throw ShapeError("shape of rank " + std::to_string(dims.size()) + " exceeds the maximum rank " +
                     std::to_string(kMaxRank));
  }
  for (std::int64_t d : dims) {
    if (d < 0) throw ShapeError("shape dimensions must be non-negative, got " + std::to_string(d));
  }
  rank_ = static_cast<int>(dims.size());
  std::copy(dims.begin(), dims.end(), dims_.begin());
  (void)numel();  // a shape whose element count overflows is refused here (graph/checked.hpp)
}

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  bool overflow = false;
  for (int i = 0; i < rank_; ++i) {
    const std::int64_t d = dims_[static_cast<std::size_t>(i)];
    if (d == 0) return 0;
    overflow |= __builtin_mul_overflow(n, d, &n);
  }
  if (overflow || n > checked::kMaxElements || n < 0) {
    checked::numel(dims(), "shape " + str());  // throws the ShapeError
  }
  return n;
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i) {
    if ((*this)[i] != other[i]) return false;
  }
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ",";
    s += std::to_string((*this)[i]);
  }
  return s + "]";
}

std::shared_ptr<void> allocate_aligned(std::size_t bytes) {
  // Round up so the size is a multiple of the alignment, as aligned_alloc requires.
  std::size_t rounded = (std::max<std::size_t>(bytes, 1) + kTensorAlignment - 1) /
                        kTensorAlignment * kTensorAlignment;
  void* p = std::aligned_alloc(kTensorAlignment, rounded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

Tensor::Tensor(Shape shape, DType dtype) : shape_(shape), dtype_(dtype) {
  storage_ = allocate_aligned(nbytes());
  data_ = storage_.get();
}

Tensor Tensor::view(Shape shape, DType dtype, void* data) {
  if (data == nullptr && shape.numel() != 0) {
    throw Error("Tensor::view: null data for a non-empty " + shape.str() + " tensor");
  }
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.data_ = data;
  return t;
}

void Tensor::check_dtype(DType want) const {
  if (want != dtype_) {
    throw Error(std::string("tensor of dtype ") + dtype_name(dtype_) + " accessed as " +
                dtype_name(want));
  }
}

void Tensor::check_index(std::int64_t i, const char* who) const {
  if (data_ == nullptr && numel() != 0) {
    throw Error(std::string("Tensor::") + who + ": the tensor has no storage (a default-constructed "
                "Tensor)");
  }
  if (i < 0 || i >= numel()) {
    throw Error(std::string("Tensor::") + who + ": index " + std::to_string(i) +
                " is out of range for a tensor of " + std::to_string(numel()) + " elements " +
                shape_.str());
  }
}

double Tensor::at(std::int64_t i) const {
  check_index(i, "at");
  switch (dtype_) {
    case DType::kF32:
      return static_cast<const float*>(data_)[i];
    case DType::kF64:
      return static_cast<const double*>(data_)[i];
    case DType::kI32:
      return static_cast<const std::int32_t*>(data_)[i];
  }
  return 0;
}

void Tensor::set(std::int64_t i, double v) const {
  check_index(i, "set");
  switch (dtype_) {
    case DType::kF32:
      static_cast<float*>(data_)[i] = static_cast<float>(v);
      return;
    case DType::kF64:
      static_cast<double*>(data_)[i] = v;
      return;
    case DType::kI32:
      static_cast<std::int32_t*>(data_)[i] = static_cast<std::int32_t>(v);
      return;
  }
}

Tensor Tensor::clone() const {
  if (!defined()) throw Error("Tensor::clone: the tensor has no storage (a default-constructed Tensor)");
  Tensor t(shape_, dtype_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

void Tensor::copy_from(const Tensor& src) const {
  if (!(src.shape_ == shape_) || src.dtype_ != dtype_) {
    throw Error("copy_from: source " + src.shape_.str() + " " + dtype_name(src.dtype_) +
                " does not match destination " + shape_.str() + " " + dtype_name(dtype_));
  }
  if (!defined() || !src.defined()) {
    throw Error("copy_from: a tensor has no storage (a default-constructed Tensor)");
  }
  if (nbytes()) std::memcpy(data_, src.data_, nbytes());
}

void Tensor::fill(double v) const {
  if (!defined()) throw Error("Tensor::fill: the tensor has no storage (a default-constructed Tensor)");
  for (std::int64_t i = 0; i < numel(); ++i) set(i, v);
}

}  // namespace tbgrad
