#include "data/idx.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <memory>
#include <optional>
#include <system_error>
#include <utility>

namespace tbgrad::data {
namespace {

namespace fs = std::filesystem;

// idx type code for unsigned bytes, the only element type MNIST uses.
constexpr uint8_t kTypeUnsignedByte = 0x08;
constexpr int kImageDims = 3;  // count, rows, cols
constexpr int kLabelDims = 1;  // count
constexpr int kMaxDims = 3;
// Gzip streams are decompressed in steps of this size so memory grows with the data
// actually present, never with what a (possibly lying) header claims.
constexpr size_t kReadChunk = size_t{1} << 20;
constexpr size_t kCompressedBufferSize = size_t{64} << 10;

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw DataError(file.string() + ": " + what);
}

std::string errno_message(int err) {
  return std::generic_category().message(err);
}

std::string hex_byte(uint8_t value) {
  std::array<char, 8> text{};
  std::snprintf(text.data(), text.size(), "0x%02x", static_cast<unsigned>(value));
  return text.data();
}

std::string byte_count(uint64_t bytes) {
  return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
}

bool is_gzip_name(const fs::path& file) {
  return file.extension() == ".gz";
}

// Owns a POSIX file descriptor so every early throw still closes it.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileDescriptor& operator=(FileDescriptor&&) = delete;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads up to `size` bytes, retrying on interrupts and short reads; returns fewer
// only at end of file.
size_t read_fully(const FileDescriptor& fd, const fs::path& file, uint8_t* out, size_t size) {
  size_t done = 0;
  while (done < size) {
    const ssize_t got = ::read(fd.get(), out + done, size - done);
    if (got < 0) {
      if (errno == EINTR) continue;
      fail(file, "read failed: " + errno_message(errno));
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

// The decoded bytes of an idx file, read front to back.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to `size` bytes into `out`; returns fewer only at the end of the data.
  virtual size_t read(uint8_t* out, size_t size) = 0;
};

class RawSource : public ByteSource {
 public:
  RawSource(fs::path file, FileDescriptor fd) : file_(std::move(file)), fd_(std::move(fd)) {}
  size_t read(uint8_t* out, size_t size) override { return read_fully(fd_, file_, out, size); }

 private:
  fs::path file_;
  FileDescriptor fd_;
};

// Inflates with zlib directly rather than gzread: gzread silently passes non-gzip
// data through and ignores garbage after the stream, and a loader that is strict about
// everything else should not be lenient there.
class GzipSource : public ByteSource {
 public:
  GzipSource(fs::path file, FileDescriptor fd)
      : file_(std::move(file)), fd_(std::move(fd)), compressed_(kCompressedBufferSize) {
    // 15 + 32: a full 32 KiB window, and accept either a gzip or a zlib header.
    if (inflateInit2(&stream_, 15 + 32) != Z_OK) fail(file_, "cannot initialise zlib");
  }
  GzipSource(const GzipSource&) = delete;
  GzipSource& operator=(const GzipSource&) = delete;
  ~GzipSource() override { inflateEnd(&stream_); }

  size_t read(uint8_t* out, size_t size) override {
    size_t produced = 0;
    while (produced < size && !finished_) {
      if (stream_.avail_in == 0 && !refill()) {
        // A complete member followed by end of file is the normal way to end.
        if (member_complete_) {
          finished_ = true;
          break;
        }
        fail(file_, "corrupt gzip stream: compressed data ends early (file truncated?)");
      }
      if (member_complete_) {
        // gzip allows several members back to back (e.g. `cat a.gz b.gz`).
        inflateReset(&stream_);
        member_complete_ = false;
      }
      const size_t want = std::min<size_t>(size - produced, UINT_MAX);
      stream_.next_out = out + produced;
      stream_.avail_out = static_cast<uInt>(want);
      const int status = inflate(&stream_, Z_NO_FLUSH);
      produced += want - stream_.avail_out;
      if (status == Z_STREAM_END) {
        member_complete_ = true;
      } else if (status == Z_DATA_ERROR || status == Z_NEED_DICT) {
        fail(file_, std::string("corrupt gzip stream: ") +
                        (stream_.msg != nullptr ? stream_.msg : zError(status)));
      } else if (status == Z_BUF_ERROR && stream_.avail_in == 0) {
        continue;  // Needs more input; the next iteration refills.
      } else if (status != Z_OK) {
        fail(file_, std::string("gzip decompression failed: ") + zError(status));
      }
    }
    return produced;
  }

 private:
  bool refill() {
    const size_t got = read_fully(fd_, file_, compressed_.data(), compressed_.size());
    stream_.next_in = compressed_.data();
    stream_.avail_in = static_cast<uInt>(got);
    return got > 0;
  }

  fs::path file_;
  FileDescriptor fd_;
  std::vector<uint8_t> compressed_;
  z_stream stream_{};
  bool member_complete_ = false;
  bool finished_ = false;
};

struct OpenedFile {
  std::unique_ptr<ByteSource> source;
  // Known only for raw files; lets a claimed size be checked before allocating.
  std::optional<uint64_t> raw_size;
};

OpenedFile open_idx_file(const fs::path& file) {
  // O_NONBLOCK so that a FIFO (or other special file) given as a data file is refused below
  // instead of blocking open() forever; it is cleared again once the file is known to be regular.
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) fail(file, "not found; run scripts/fetch_mnist.sh or pass --data DIR");
    fail(file, "cannot open: " + errno_message(err));
  }
  // Owned from here on so the throws below close it.
  FileDescriptor owned(fd);
  struct stat info {};
  if (::fstat(fd, &info) != 0) fail(file, "cannot stat: " + errno_message(errno));
  // open() succeeds on a directory for reading; catch it here for a clear message.
  if (S_ISDIR(info.st_mode)) fail(file, "is a directory, expected an idx file");
  if (!S_ISREG(info.st_mode)) fail(file, "is not a regular file");
  if (info.st_size == 0) fail(file, "empty file");
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    fail(file, "cannot read: " + errno_message(errno));
  }

  if (is_gzip_name(file)) {
    return {std::make_unique<GzipSource>(file, std::move(owned)), std::nullopt};
  }
  return {std::make_unique<RawSource>(file, std::move(owned)), static_cast<uint64_t>(info.st_size)};
}

struct IdxHeader {
  std::vector<uint64_t> dims;
  uint64_t size_in_bytes = 0;  // Of the header itself, magic included.
};

IdxHeader read_header(ByteSource& source, const fs::path& file, int expected_dims,
                      const char* content) {
  std::array<uint8_t, 4> magic{};
  const size_t magic_bytes = source.read(magic.data(), magic.size());
  if (magic_bytes == 0) fail(file, "empty file (no idx header)");
  if (magic_bytes < magic.size()) {
    fail(file, "truncated header: only " + std::to_string(magic_bytes) +
                   " bytes, an idx header needs at least 4");
  }
  if (magic[0] != 0 || magic[1] != 0) {
    std::string what = "wrong magic: file starts with " + hex_byte(magic[0]) + " " +
                       hex_byte(magic[1]) + ", an idx file starts with 0x00 0x00";
    if (magic[0] == 0x1f && magic[1] == 0x8b) {
      what += " (it looks gzip-compressed; name it " + file.filename().string() + ".gz)";
    }
    fail(file, what);
  }
  if (magic[2] != kTypeUnsignedByte) {
    fail(file, "wrong type code " + hex_byte(magic[2]) + ", expected " +
                   hex_byte(kTypeUnsignedByte) + " (unsigned byte)");
  }
  if (magic[3] != expected_dims) {
    fail(file, "wrong dimension count " + std::to_string(magic[3]) + ", expected " +
                   std::to_string(expected_dims) + " for " + content);
  }

  std::array<uint8_t, size_t{4} * kMaxDims> dim_bytes{};
  const size_t wanted = 4 * static_cast<size_t>(expected_dims);
  const size_t got = source.read(dim_bytes.data(), wanted);
  if (got < wanted) {
    fail(file, "truncated dims: header declares " + std::to_string(expected_dims) +
                   " dimensions (" + std::to_string(wanted) + " bytes) but only " +
                   std::to_string(got) + " bytes follow");
  }
  IdxHeader header;
  header.size_in_bytes = magic.size() + wanted;
  for (int d = 0; d < expected_dims; ++d) {
    const uint8_t* be = dim_bytes.data() + size_t{4} * static_cast<size_t>(d);
    header.dims.push_back((uint64_t{be[0]} << 24) | (uint64_t{be[1]} << 16) |
                          (uint64_t{be[2]} << 8) | uint64_t{be[3]});
  }
  return header;
}

// The payload size the dims imply, refusing sizes that overflow or that no vector
// could hold (the +1 headroom is for the trailing-data probe in read_payload).
uint64_t payload_bytes(const fs::path& file, const std::vector<uint64_t>& dims) {
  uint64_t total = 1;
  for (uint64_t dim : dims) {
    if (__builtin_mul_overflow(total, dim, &total)) fail(file, "header sizes overflow");
  }
  if (total >= std::vector<uint8_t>().max_size()) {
    fail(file, "header claims " + std::to_string(total) + " bytes, more than can be addressed");
  }
  return total;
}

// Note [Huge pages]: training reads the pixels in shuffled order, one 784-byte image from
// each of 32 random places per batch, so nearly every image costs a TLB miss. In a virtual
// machine a miss walks two sets of page tables, and the miss is the cost: measured on a
// 2-vCPU Xeon VM, copying the examples in took 13% of a one-thread seed epoch
// (docs/performance.md), and prefetching them a batch ahead did not hide it. Backed by 2 MiB
// pages, the 47 MB of MNIST's training pixels need 23 TLB entries instead of 11,500. The
// buffer's pages are untouched when this is asked (reserve() maps them, resize() then writes
// them), so the kernel can back them with huge pages as they fault in; with transparent huge
// pages "never", or off Linux, it is a no-op. A hint only: nothing depends on it but speed.
void advise_huge_pages([[maybe_unused]] std::vector<uint8_t>& buffer) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<uintptr_t>(buffer.data());
  const uintptr_t end = begin + buffer.capacity();
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = end & ~(kHuge - 1);
  // NOLINTNEXTLINE(performance-no-int-to-ptr): the buffer's own pages, rounded in
  if (first < last) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

// Reads exactly `expected` payload bytes. `claim` describes them for error messages,
// e.g. "60000 images (47040000 bytes of pixels)".
std::vector<uint8_t> read_payload(const fs::path& file, OpenedFile& opened, uint64_t header_bytes,
                                  uint64_t expected, const std::string& claim) {
  if (opened.raw_size) {
    // Checked against the file size first, so a lying header costs no allocation.
    const uint64_t available = *opened.raw_size - header_bytes;
    if (available < expected) {
      fail(file,
           "truncated: header says " + claim + " but the file holds " + byte_count(available));
    }
    if (available > expected) {
      fail(file, "trailing garbage: " + std::to_string(available - expected) + " bytes after the " +
                     claim + " the header declares");
    }
  }

  // One byte past the end detects data beyond what the header declares, which for a
  // gzip stream is also where decompression stops: a bomb never gets further.
  const uint64_t limit = expected + 1;
  std::vector<uint8_t> data;
  data.reserve(opened.raw_size ? limit : std::min<uint64_t>(limit, kReadChunk));
  advise_huge_pages(data);
  while (data.size() < limit) {
    if (data.size() == data.capacity()) {
      data.reserve(std::min<uint64_t>(limit, data.capacity() * 2));
      advise_huge_pages(data);  // before the move's writes fault the new buffer in
    }
    const size_t filled = data.size();
    data.resize(std::min<uint64_t>(limit, data.capacity()));
    const size_t got = opened.source->read(data.data() + filled, data.size() - filled);
    data.resize(filled + got);
    if (got == 0) break;
  }

  if (data.size() < expected) {
    fail(file,
         "truncated: header says " + claim + " but the file holds " + byte_count(data.size()));
  }
  if (data.size() > expected) {
    fail(file, "trailing garbage: data continues past the " + claim + " the header declares");
  }
  return data;
}

std::string images_claim(uint64_t count, uint64_t bytes) {
  return std::to_string(count) + " images (" + std::to_string(bytes) + " bytes of pixels)";
}

// Picks NAME or NAME.gz in `dir`, preferring the raw file.
fs::path resolve_data_file(const fs::path& dir, std::string_view name) {
  fs::path raw = dir / name;
  fs::path gz = dir / (std::string(name) + ".gz");
  std::error_code error;
  // An error other than "does not exist" (e.g. no permission on dir) is left for
  // open() to report precisely, rather than being mistaken for a missing file.
  if (fs::exists(raw, error) || error) return raw;
  if (fs::exists(gz, error) || error) return gz;
  fail(raw, "not found (nor " + gz.filename().string() +
                "); run scripts/fetch_mnist.sh or pass --data DIR");
}

void write_raw(const fs::path& file, const std::vector<uint8_t>& header, const uint8_t* data,
               uint64_t size) {
  std::FILE* out = std::fopen(file.c_str(), "wb");
  if (out == nullptr) fail(file, "cannot create: " + errno_message(errno));
  const bool written = std::fwrite(header.data(), 1, header.size(), out) == header.size() &&
                       (size == 0 || std::fwrite(data, 1, size, out) == size);
  const int write_errno = errno;
  // fclose flushes, so its result matters as much as fwrite's.
  const bool closed = std::fclose(out) == 0;
  if (!written) fail(file, "write failed: " + errno_message(write_errno));
  if (!closed) fail(file, "write failed: " + errno_message(errno));
}

void write_gzip(const fs::path& file, const std::vector<uint8_t>& header, const uint8_t* data,
                uint64_t size) {
  gzFile out = gzopen(file.c_str(), "wb");
  if (out == nullptr) fail(file, "cannot create: " + errno_message(errno));
  auto write_all = [&](const uint8_t* bytes, uint64_t count) {
    // gzwrite takes an unsigned length and returns an int, so feed it in slices.
    constexpr uint64_t kSlice = uint64_t{1} << 30;
    while (count > 0) {
      const unsigned slice = static_cast<unsigned>(std::min(count, kSlice));
      if (gzwrite(out, bytes, slice) != static_cast<int>(slice)) return false;
      bytes += slice;
      count -= slice;
    }
    return true;
  };
  const bool written = write_all(header.data(), header.size()) && write_all(data, size);
  int zlib_error = Z_OK;
  const std::string message = written ? "" : gzerror(out, &zlib_error);
  const bool closed = gzclose(out) == Z_OK;
  if (!written) fail(file, "gzip write failed: " + message);
  if (!closed) fail(file, "gzip write failed while closing");
}

void write_idx(const fs::path& file, const std::vector<int64_t>& dims, const uint8_t* data,
               bool gzip) {
  std::vector<uint8_t> header = {0, 0, kTypeUnsignedByte, static_cast<uint8_t>(dims.size())};
  uint64_t size = 1;
  for (int64_t dim : dims) {
    // idx sizes are unsigned 32-bit; a value that does not fit would silently wrap.
    if (dim < 0 || dim > int64_t{UINT32_MAX}) {
      fail(file, "cannot write dimension " + std::to_string(dim) + ": idx sizes are 32-bit");
    }
    const auto value = static_cast<uint32_t>(dim);
    header.insert(header.end(),
                  {static_cast<uint8_t>(value >> 24), static_cast<uint8_t>(value >> 16),
                   static_cast<uint8_t>(value >> 8), static_cast<uint8_t>(value)});
    if (__builtin_mul_overflow(size, uint64_t{value}, &size)) {
      fail(file, "cannot write: sizes overflow");
    }
  }
  if (size > 0 && data == nullptr) fail(file, "cannot write: no data given");
  if (gzip) {
    write_gzip(file, header, data, size);
  } else {
    write_raw(file, header, data, size);
  }
}

}  // namespace

std::string_view images_file_name(Split split) {
  return split == Split::kTrain ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte";
}

std::string_view labels_file_name(Split split) {
  return split == Split::kTrain ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte";
}

IdxImages read_idx_images(const fs::path& file, int required_rows, int required_cols) {
  OpenedFile opened = open_idx_file(file);
  const IdxHeader header = read_header(*opened.source, file, kImageDims, "images");
  const uint64_t count = header.dims[0];
  const uint64_t rows = header.dims[1];
  const uint64_t cols = header.dims[2];
  if (count == 0) fail(file, "header says the file holds 0 images");
  if (rows != static_cast<uint64_t>(required_rows) ||
      cols != static_cast<uint64_t>(required_cols)) {
    fail(file, "wrong image size: images are " + std::to_string(rows) + "x" + std::to_string(cols) +
                   ", expected " + std::to_string(required_rows) + "x" +
                   std::to_string(required_cols));
  }
  const uint64_t bytes = payload_bytes(file, header.dims);
  IdxImages images;
  images.pixels =
      read_payload(file, opened, header.size_in_bytes, bytes, images_claim(count, bytes));
  images.count = static_cast<int64_t>(count);
  images.rows = required_rows;
  images.cols = required_cols;
  return images;
}

std::vector<uint8_t> read_idx_labels(const fs::path& file) {
  OpenedFile opened = open_idx_file(file);
  const IdxHeader header = read_header(*opened.source, file, kLabelDims, "labels");
  const uint64_t count = header.dims[0];
  if (count == 0) fail(file, "header says the file holds 0 labels");
  std::vector<uint8_t> labels =
      read_payload(file, opened, header.size_in_bytes, payload_bytes(file, header.dims),
                   std::to_string(count) + " labels");
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= kNumClasses) {
      fail(file, "label " + std::to_string(labels[i]) + " at index " + std::to_string(i) +
                     " is outside 0-9");
    }
  }
  return labels;
}

Dataset load_split(const fs::path& dir, Split split, int required_rows, int required_cols) {
  const fs::path images_file = resolve_data_file(dir, images_file_name(split));
  const fs::path labels_file = resolve_data_file(dir, labels_file_name(split));
  // Labels first: they are small, so a bad labels file fails before 47 MB of pixels
  // are read.
  std::vector<uint8_t> labels = read_idx_labels(labels_file);
  IdxImages images = read_idx_images(images_file, required_rows, required_cols);
  if (static_cast<int64_t>(labels.size()) != images.count) {
    fail(labels_file, "mismatched counts: holds " + std::to_string(labels.size()) + " labels but " +
                          images_file.string() + " holds " + std::to_string(images.count) +
                          " images");
  }
  Dataset dataset;
  dataset.count = images.count;
  dataset.rows = images.rows;
  dataset.cols = images.cols;
  dataset.images = std::move(images.pixels);
  dataset.labels = std::move(labels);
  return dataset;
}

void write_idx_images(const fs::path& file, int64_t count, int rows, int cols,
                      const uint8_t* pixels) {
  write_idx(file, {count, rows, cols}, pixels, /*gzip=*/false);
}

void write_idx_labels(const fs::path& file, int64_t count, const uint8_t* labels) {
  write_idx(file, {count}, labels, /*gzip=*/false);
}

void write_idx_images_gz(const fs::path& file, int64_t count, int rows, int cols,
                         const uint8_t* pixels) {
  write_idx(file, {count, rows, cols}, pixels, /*gzip=*/true);
}

void write_idx_labels_gz(const fs::path& file, int64_t count, const uint8_t* labels) {
  write_idx(file, {count}, labels, /*gzip=*/true);
}

}  // namespace tbgrad::data
