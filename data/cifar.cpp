#include "data/cifar.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <string>
#include <system_error>

namespace tbgrad::data {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw DataError(file.string() + ": " + what);
}

std::string errno_message(int err) {
  return std::generic_category().message(err);
}

struct Format {
  const char* name;   // "CIFAR-10"
  int label_bytes;    // before the pixels
  int label_at;       // which of them is the label kept
  int limit[2];       // each label byte's classes
  const char* what[2];
};

// Reads `file` whole, appending its records to `out` (pixels and the chosen labels).
void read_records(const fs::path& file, const Format& format, Dataset& out) {
  // O_NONBLOCK so that a FIFO is refused below instead of blocking the open.
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) fail(file, "not found");
    fail(file, "cannot open: " + errno_message(err));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0) fail(file, "cannot stat: " + errno_message(errno));
  if (S_ISDIR(info.st_mode)) fail(file, "is a directory, expected a " + std::string(format.name) + " file");
  if (!S_ISREG(info.st_mode)) fail(file, "is not a regular file");
  const auto size = static_cast<std::uint64_t>(info.st_size);
  const std::uint64_t record = static_cast<std::uint64_t>(format.label_bytes + kCifarImageBytes);
  if (size == 0) fail(file, "empty file (a " + std::string(format.name) + " file holds records of " +
                                std::to_string(record) + " bytes)");
  if (const std::uint64_t rest = size % record) {
    const std::uint64_t whole = size / record;
    fail(file, "truncated record: the file's " + std::to_string(size) + " bytes hold " +
                   std::to_string(whole) + " whole records of " + std::to_string(record) +
                   " bytes; record " + std::to_string(whole) + " at byte offset " +
                   std::to_string(whole * record) + " has only " + std::to_string(rest) + " bytes");
  }
  const std::uint64_t count = size / record;
  const std::uint64_t total = static_cast<std::uint64_t>(out.count) + count;
  std::uint64_t pixels = 0;
  if (__builtin_mul_overflow(total, static_cast<std::uint64_t>(kCifarImageBytes), &pixels) ||
      pixels >= std::vector<std::uint8_t>().max_size() ||
      total > static_cast<std::uint64_t>(INT64_MAX)) {
    fail(file, "the data set would hold " + std::to_string(total) + " images, more than can be addressed");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    fail(file, "cannot read: " + errno_message(errno));
  }

  // Read in pieces of whole records, so memory grows with the data actually read.
  constexpr std::uint64_t kRecordsPerRead = 1024;
  std::vector<std::uint8_t> buffer(static_cast<std::size_t>(std::min(count, kRecordsPerRead) * record));
  out.images.reserve(static_cast<std::size_t>(pixels));
  out.labels.reserve(static_cast<std::size_t>(total));
  for (std::uint64_t first = 0; first < count;) {
    const std::uint64_t n = std::min(count - first, kRecordsPerRead);
    const std::size_t want = static_cast<std::size_t>(n * record);
    std::size_t done = 0;
    while (done < want) {
      const ssize_t got = ::read(fd, buffer.data() + done, want - done);
      if (got < 0) {
        if (errno == EINTR) continue;
        fail(file, "read failed at byte offset " + std::to_string(first * record + done) + ": " +
                       errno_message(errno));
      }
      if (got == 0) {
        fail(file, "truncated: the file ended at byte offset " +
                       std::to_string(first * record + done) + " while being read (it was " +
                       std::to_string(size) + " bytes)");
      }
      done += static_cast<std::size_t>(got);
    }
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint8_t* rec = buffer.data() + i * record;
      const std::uint64_t offset = (first + i) * record;
      for (int b = 0; b < format.label_bytes; ++b) {
        if (rec[b] >= format.limit[b]) {
          fail(file, std::string(format.what[b]) + " " + std::to_string(rec[b]) +
                         " at byte offset " + std::to_string(offset + static_cast<std::uint64_t>(b)) +
                         " (record " + std::to_string(first + i) + ") is outside 0-" +
                         std::to_string(format.limit[b] - 1));
        }
      }
      out.labels.push_back(rec[format.label_at]);
      out.images.insert(out.images.end(), rec + format.label_bytes, rec + record);
    }
    first += n;
  }
  out.count = static_cast<std::int64_t>(total);
}

Dataset read_all(const std::vector<fs::path>& files, const Format& format) {
  if (files.empty()) throw DataError(std::string("read ") + format.name + ": no files given");
  Dataset d;
  d.channels = kCifarChannels;
  d.rows = d.cols = kCifarSide;
  for (const fs::path& f : files) read_records(f, format, d);
  return d;
}

constexpr Format kCifar10 = {"CIFAR-10", 1, 0, {10, 0}, {"label", ""}};

Format cifar100(CifarLabels labels) {
  return {"CIFAR-100", 2, labels == CifarLabels::kCoarse ? 0 : 1, {20, 100},
          {"coarse label", "fine label"}};
}

void write_records(const fs::path& file, std::int64_t count, const std::uint8_t* pixels,
                   const std::uint8_t* first, const std::uint8_t* second) {
  if (count < 0 || (count > 0 && (pixels == nullptr || first == nullptr))) {
    fail(file, "cannot write: no data given");
  }
  std::FILE* out = std::fopen(file.c_str(), "wb");
  if (out == nullptr) fail(file, "cannot create: " + errno_message(errno));
  bool written = true;
  for (std::int64_t i = 0; written && i < count; ++i) {
    written = std::fputc(first[i], out) != EOF &&
              (second == nullptr || std::fputc(second[i], out) != EOF) &&
              std::fwrite(pixels + i * kCifarImageBytes, 1, kCifarImageBytes, out) ==
                  static_cast<std::size_t>(kCifarImageBytes);
  }
  const int write_errno = errno;
  const bool closed = std::fclose(out) == 0;
  if (!written) fail(file, "write failed: " + errno_message(write_errno));
  if (!closed) fail(file, "write failed: " + errno_message(errno));
}

}  // namespace

Dataset read_cifar10(const std::vector<fs::path>& files) {
  return read_all(files, kCifar10);
}

Dataset read_cifar100(const std::vector<fs::path>& files, CifarLabels labels) {
  return read_all(files, cifar100(labels));
}

Dataset load_cifar10(const fs::path& dir, Split split) {
  if (split == Split::kTest) return read_cifar10({dir / "test_batch.bin"});
  std::vector<fs::path> files;
  for (int i = 1; i <= 5; ++i) files.push_back(dir / ("data_batch_" + std::to_string(i) + ".bin"));
  return read_cifar10(files);
}

Dataset load_cifar100(const fs::path& dir, Split split, CifarLabels labels) {
  return read_cifar100({dir / (split == Split::kTest ? "test.bin" : "train.bin")}, labels);
}

void write_cifar10(const fs::path& file, std::int64_t count, const std::uint8_t* pixels,
                   const std::uint8_t* labels) {
  write_records(file, count, pixels, labels, nullptr);
}

void write_cifar100(const fs::path& file, std::int64_t count, const std::uint8_t* pixels,
                    const std::uint8_t* coarse, const std::uint8_t* fine) {
  if (count > 0 && fine == nullptr) fail(file, "cannot write: no fine labels given");
  write_records(file, count, pixels, coarse, fine);
}

}  // namespace tbgrad::data
