// Model checkpoint files in the safetensors layout.
//
// The file is readable by Python's `safetensors` package and by plain numpy
// (see docs/checkpoint-format.md); on top of safetensors it carries a format
// version and a CRC-32 so that corruption is detected instead of silently
// loading wrong weights. This header deliberately uses only standard types so
// that tools can use it without pulling in the rest of tbgrad or a JSON
// library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tbgrad::nn {

// One named tensor as stored in the file.
//
// `dtype` is one of "F32", "F64", "I64", "U8" (safetensors spelling). `data`
// holds the elements in row-major order as little-endian bytes; its size must
// be the product of `shape` times the element size (an empty shape is a
// scalar with one element).
struct CheckpointTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> data;
};

struct Checkpoint {
  // Free-form string metadata. The keys "format", "format_version" and
  // "crc32" are reserved: save_checkpoint writes them itself and
  // load_checkpoint checks them and leaves them out of the result.
  std::map<std::string, std::string> metadata;
  // load_checkpoint returns the tensors in the order their data appears in
  // the file, which is the order they had when saved (except that adjacent
  // empty tensors, which share an offset, come back sorted by name).
  std::vector<CheckpointTensor> tensors;

  // The tensor called `name`, or nullptr.
  const CheckpointTensor* find(std::string_view name) const;
};

// Any failure to save or load a checkpoint. what() names the file and says
// what is wrong with it.
class CheckpointError : public std::runtime_error {
 public:
  CheckpointError(const std::filesystem::path& file, std::string_view problem);

  const std::filesystem::path& file() const noexcept { return file_; }

 private:
  std::filesystem::path file_;
};

// Writes `ckpt` to `file` atomically: either the complete new checkpoint is
// in place and synced to disk when this returns, or it throws
// CheckpointError and whatever was at `file` before is untouched. The data
// goes to a hidden temporary file next to `file` (".<name>.tmp.<pid>.<hex>"),
// renamed over it once synced; a process killed mid-save can leave that
// temporary file behind, and the next save to `file` removes it.
void save_checkpoint(const std::filesystem::path& file, const Checkpoint& ckpt);

// Writes `bytes` to `file` the same atomic way (for reports and other outputs that must not
// be left half-written); throws CheckpointError naming the file on failure.
void write_file_atomically(const std::filesystem::path& file, std::string_view bytes);

// Reads and fully validates a checkpoint written by save_checkpoint; throws
// CheckpointError if the file is malformed, corrupt or from a newer format.
Checkpoint load_checkpoint(const std::filesystem::path& file);

}  // namespace tbgrad::nn
