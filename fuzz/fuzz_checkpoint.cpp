// libFuzzer target: the checkpoint loader (nn::load_checkpoint).
//
// Input: byte 0, if odd, asks the harness to repair the CRC-32 first (when the input has a
// "crc32":"........" field), so that mutations get past the checksum and the fuzzer also
// explores files that load; the rest is the file. Expected failures are CheckpointError
// naming the file. A checkpoint that loads must save and load back to the same contents.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.hpp"
#include "nn/checkpoint.hpp"

#ifndef TBGRAD_FUZZ_ENTRY
#define TBGRAD_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

using tbgrad::nn::Checkpoint;
using tbgrad::nn::CheckpointError;
using tbgrad_fuzz::check;

namespace {

// Sets the 8 digits after the first "crc32":" to the file's CRC-32 as documented in
// nn/checkpoint.cpp: computed over the whole file with the digits as "00000000".
void repair_crc(std::vector<uint8_t>& file) {
  constexpr std::string_view kPrefix = "\"crc32\":\"";
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  const size_t at = text.find(kPrefix);
  if (at == std::string_view::npos || at + kPrefix.size() + 8 > file.size()) return;
  uint8_t* digits = file.data() + at + kPrefix.size();
  std::memset(digits, '0', 8);
  uint32_t crc = static_cast<uint32_t>(crc32_z(0, file.data(), file.size()));
  for (int i = 7; i >= 0; --i, crc >>= 4) digits[i] = static_cast<uint8_t>("0123456789abcdef"[crc & 0xF]);
}

bool same(const Checkpoint& a, const Checkpoint& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& x = a.tensors[i];
    const auto& y = b.tensors[i];
    if (x.name != y.name || x.dtype != y.dtype || x.shape != y.shape || x.data != y.data) return false;
  }
  return true;
}

}  // namespace

extern "C" int TBGRAD_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::vector<uint8_t> bytes(data + 1, data + size);
  if (data[0] & 1) repair_crc(bytes);
  const auto file = tbgrad_fuzz::write_file("model.ckpt", bytes.data(), bytes.size());

  Checkpoint loaded;
  try {
    loaded = tbgrad::nn::load_checkpoint(file);
  } catch (const CheckpointError& e) {
    tbgrad_fuzz::check_names_file(e.what(), file);
    check(e.file() == file, "CheckpointError::file() is not the file");
    return 0;
  }

  for (const auto& [key, value] : loaded.metadata) {
    check(key != "format" && key != "format_version" && key != "crc32",
          "a reserved metadata key reached the caller");
  }
  for (const auto& t : loaded.tensors) {
    size_t elements = 1;
    for (int64_t d : t.shape) {
      check(d >= 0, "negative dimension accepted");
      elements *= static_cast<size_t>(d);
    }
    const size_t element_size = t.dtype == "U8" ? 1 : t.dtype == "F32" ? 4 : 8;
    check(t.data.size() == elements * element_size, "tensor data size differs from its shape");
    check(loaded.find(t.name) != nullptr, "find() misses a loaded tensor");
  }

  // Whatever loads must survive a save/load round trip unchanged.
  const auto copy = tbgrad_fuzz::scratch_dir() / "round-trip.ckpt";
  try {
    tbgrad::nn::save_checkpoint(copy, loaded);
  } catch (const CheckpointError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    tbgrad_fuzz::die("a loaded checkpoint cannot be saved");
  }
  check(same(tbgrad::nn::load_checkpoint(copy), loaded), "round trip changed the checkpoint");
  return 0;
}
