// libFuzzer target: the idx reader on gzip-compressed (.gz) files.
//
// Input: byte 0 picks how the rest becomes the file:
//   0: as is (the fuzzer attacks the gzip decoder: corrupt, truncated, trailing data)
//   1: gzip-compressed here, one member (the fuzzer attacks the idx parser behind zlib,
//      where the file size cannot bound what a header claims)
//   2: two gzip members back to back, split where byte 3 says
// bytes 1 and 2 choose the required image size as in fuzz_idx.cpp (0 means 28).
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "apps/mnist/idx.hpp"
#include "fuzz/fuzz_util.hpp"
#include "fuzz/idx_checks.hpp"

#ifndef TBGRAD_FUZZ_ENTRY
#define TBGRAD_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

namespace {

// Appends one gzip member holding `size` bytes.
void gzip_member(const uint8_t* data, size_t size, std::vector<uint8_t>& out) {
  z_stream s{};
  // 15 + 16: gzip wrapper. Level 1 keeps executions fast.
  if (deflateInit2(&s, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    tbgrad_fuzz::die("deflateInit2");
  }
  const size_t start = out.size();
  out.resize(start + deflateBound(&s, static_cast<uLong>(size)) + 32);
  s.next_in = const_cast<Bytef*>(data);
  s.avail_in = static_cast<uInt>(size);
  s.next_out = out.data() + start;
  s.avail_out = static_cast<uInt>(out.size() - start);
  if (deflate(&s, Z_FINISH) != Z_STREAM_END) tbgrad_fuzz::die("deflate");
  out.resize(start + s.total_out);
  deflateEnd(&s);
}

}  // namespace

extern "C" int TBGRAD_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const int mode = data[0] % 3;
  const int rows = data[1] == 0 ? 28 : data[1];
  const int cols = data[2] == 0 ? 28 : data[2];
  const uint8_t split_byte = data[3];
  const uint8_t* body = data + 4;
  const size_t body_size = size - 4;

  std::vector<uint8_t> file_bytes;
  if (mode == 0) {
    file_bytes.assign(body, body + body_size);
  } else if (mode == 1) {
    gzip_member(body, body_size, file_bytes);
  } else {
    const size_t split = body_size * split_byte / 255;
    gzip_member(body, split, file_bytes);
    gzip_member(body + split, body_size - split, file_bytes);
  }
  const auto file =
      tbgrad_fuzz::write_file("train-images-idx3-ubyte.gz", file_bytes.data(), file_bytes.size());

  // In mode 0 the fuzzer's bytes are the compressed file: the data size is unknown.
  tbgrad_fuzz::check_idx_readers(file, rows, cols,
                                 mode == 0 ? std::nullopt : std::optional<size_t>(body_size));
  return 0;
}
