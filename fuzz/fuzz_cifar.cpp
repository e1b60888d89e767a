// libFuzzer target: the CIFAR-10 and CIFAR-100 binary readers.
//
// Input: byte 0 chooses the format (bit 0: CIFAR-100; bit 1: its coarse labels; bit 2: the file
// read twice, concatenated); the rest is the file. Expected failures are DataError naming the
// file; a file that reads must hold whole records, its labels in range and its pixels exactly the
// records' (checked against the bytes here).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/cifar.hpp"
#include "fuzz/fuzz_util.hpp"

#ifndef TBGRAD_FUZZ_ENTRY
#define TBGRAD_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

using tbgrad_fuzz::check;

extern "C" int TBGRAD_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool hundred = (data[0] & 1) != 0;
  const bool coarse = (data[0] & 2) != 0;
  const int copies = (data[0] & 4) != 0 ? 2 : 1;
  const uint8_t* body = data + 1;
  const size_t n = size - 1;
  const auto file = tbgrad_fuzz::write_file("data_batch_1.bin", body, n);
  const std::vector<std::filesystem::path> files(static_cast<size_t>(copies), file);
  tbgrad::data::Dataset d;
  try {
    d = hundred ? tbgrad::data::read_cifar100(
                      files, coarse ? tbgrad::data::CifarLabels::kCoarse : tbgrad::data::CifarLabels::kFine)
                : tbgrad::data::read_cifar10(files);
  } catch (const tbgrad::data::DataError& e) {
    tbgrad_fuzz::check_names_file(e.what(), file);
    return 0;
  }
  const size_t label_bytes = hundred ? 2 : 1;
  const size_t record = label_bytes + 3072;
  check(n > 0 && n % record == 0, "a file of partial records was accepted");
  const size_t count = n / record;
  check(d.count == static_cast<int64_t>(count * static_cast<size_t>(copies)), "wrong record count");
  check(d.channels == 3 && d.rows == 32 && d.cols == 32, "wrong image shape");
  check(d.images.size() == static_cast<size_t>(d.count) * 3072, "pixel bytes differ from the count");
  check(d.labels.size() == static_cast<size_t>(d.count), "label count differs");
  const int limit = !hundred ? 10 : coarse ? 20 : 100;
  for (size_t i = 0; i < d.labels.size(); ++i) {
    const size_t r = i % count;
    check(d.labels[i] < limit, "label out of range accepted");
    check(d.labels[i] == body[r * record + (hundred && !coarse ? 1 : 0)], "label is not the record's");
    for (size_t j = 0; j < 3072; j += 97) {
      check(d.images[i * 3072 + j] == body[r * record + label_bytes + j], "pixel is not the record's");
    }
  }
  return 0;
}
