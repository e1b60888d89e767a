#include "nn/checkpoint.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <system_error>
#include <tuple>
#include <utility>

// File layout (safetensors, see docs/checkpoint-format.md):
//
//   [8 bytes]  N, the header length, unsigned little-endian
//   [N bytes]  UTF-8 JSON object, padded with spaces to a multiple of 8
//   [rest]     data buffer; tensors' data_offsets are relative to its start
//
// Integrity: metadata "crc32" holds 8 lowercase hex digits of the zlib
// CRC-32 of the WHOLE file (length prefix, header including its padding, and
// data buffer) as it would be if those 8 digits were "00000000". The value
// always appears in the header as the exact bytes "crc32":"xxxxxxxx" (compact
// JSON, which is what we and serde_json write). Hashing the raw bytes rather
// than a re-serialisation means every byte of the file is covered, so any
// single changed byte, or any burst of up to 32 changed bits, is detected.

namespace tbgrad::nn {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kFormatKey = "format";
constexpr std::string_view kFormatName = "tbgrad-checkpoint";
constexpr std::string_view kVersionKey = "format_version";
constexpr uint64_t kFormatVersion = 1;
constexpr std::string_view kCrcKey = "crc32";
constexpr std::string_view kCrcPlaceholder = "00000000";
// Where the crc digits sit in the raw header: the key and opening quote of
// the value directly precede them (no whitespace, see above).
constexpr std::string_view kCrcPrefix = "\"crc32\":\"";

constexpr size_t kLengthPrefixBytes = 8;
// Safetensors' own reader refuses headers above 100 MB; a larger one is
// certainly corruption, and we must not allocate it on the file's word.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
constexpr size_t kHeaderAlignment = 8;

std::optional<uint64_t> dtype_size(std::string_view dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F64") return 8;
  if (dtype == "I64") return 8;
  if (dtype == "U8") return 1;
  return std::nullopt;
}

bool is_reserved_metadata_key(std::string_view key) {
  return key == kFormatKey || key == kVersionKey || key == kCrcKey;
}

std::string errno_message(int err) {
  return std::system_category().message(err);
}

std::string in_quotes(std::string_view text) {
  // Appended piecewise: `"'" + std::string(text) + "'"` trips GCC 12's false
  // -Wrestrict at -O3 (GCC bug 105329).
  std::string quoted;
  quoted.reserve(text.size() + 2);
  quoted += '\'';
  quoted += text;
  quoted += '\'';
  return quoted;
}

uint32_t crc_update(uint32_t crc, const void* bytes, size_t size) {
  // zlib treats a null buffer as "return the initial crc value", which would
  // silently drop everything hashed so far; an empty tensor has a null data().
  if (size == 0) return crc;
  // crc32_z takes a size_t length, so tensors above 4 GiB need no chunking.
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const Bytef*>(bytes), size));
}

std::array<unsigned char, kLengthPrefixBytes> encode_u64_le(uint64_t value) {
  std::array<unsigned char, kLengthPrefixBytes> bytes{};
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
  return bytes;
}

uint64_t decode_u64_le(const std::array<unsigned char, kLengthPrefixBytes>& bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size(); ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return value;
}

std::string crc_to_hex(uint32_t crc) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(8, '0');
  for (int i = 7; i >= 0; --i, crc >>= 4) hex[static_cast<size_t>(i)] = kDigits[crc & 0xF];
  return hex;
}

std::optional<uint32_t> parse_crc_hex(std::string_view hex) {
  if (hex.size() != 8) return std::nullopt;
  uint32_t crc = 0;
  for (char c : hex) {
    uint32_t digit;
    if (c >= '0' && c <= '9') {
      digit = static_cast<uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<uint32_t>(c - 'a' + 10);
    } else {
      return std::nullopt;  // Upper case is refused too: the writer never emits it.
    }
    crc = (crc << 4) | digit;
  }
  return crc;
}

// Element count and byte size of a tensor, or nullopt if a dimension is
// negative or the product overflows.
struct TensorExtent {
  uint64_t elements;
  uint64_t bytes;
};

std::optional<TensorExtent> tensor_extent(std::span<const uint64_t> dims, uint64_t element_size) {
  uint64_t elements = 1;
  for (uint64_t dim : dims) {
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    if (__builtin_mul_overflow(elements, dim, &elements)) return std::nullopt;
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(elements, element_size, &bytes)) return std::nullopt;
  return TensorExtent{elements, bytes};
}

// Owns a POSIX file descriptor so every early exit closes it.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd = -1) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }

  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Closes now and reports the result: on some file systems (NFS) close is
  // where a deferred write error surfaces, so a writer must check it.
  int close() {
    int result = ::close(fd_);
    fd_ = -1;
    return result;
  }

 private:
  int fd_;
};

// ---------------------------------------------------------------- writing

// The name of a temporary file for `target`: ".<name>.tmp.<pid>.<16 hex digits>", with <name>
// cut to its first 222 bytes so that the whole name fits NAME_MAX (255) for any pid of up to
// 10 digits: a legal 228-255-byte target name used to fail with "File name too long".
std::string temp_prefix(const std::filesystem::path& target) {
  constexpr std::size_t kNameMax = 255, kSuffix = 10 + 1 + 16, kFixed = 1 + 5;  // ".", ".tmp."
  const std::string name = target.filename().string();
  std::string prefix = ".";
  prefix += name.substr(0, kNameMax - kSuffix - kFixed);
  prefix += ".tmp.";
  return prefix;
}

// Removes the temporary files that earlier saves to the same target left behind because their
// process died mid-save (SIGKILL, OOM killer): names of our pattern whose pid is no longer a
// running process. Best effort: anything unexpected leaves the file alone.
void remove_stale_temp_files(const std::filesystem::path& directory,
                             const std::filesystem::path& target) {
  const std::string prefix = temp_prefix(target);
  std::error_code error;
  std::filesystem::directory_iterator it(directory, error);
  for (; !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string_view rest = std::string_view(name).substr(prefix.size());
    const size_t dot = rest.find('.');
    if (dot == std::string_view::npos || rest.size() - dot - 1 != 16) continue;
    if (rest.find_first_not_of("0123456789abcdef", dot + 1) != std::string_view::npos) continue;
    pid_t pid = 0;
    auto [end, parsed] = std::from_chars(rest.data(), rest.data() + dot, pid);
    if (parsed != std::errc() || end != rest.data() + dot || pid <= 0 || pid == ::getpid()) continue;
    // ESRCH: no such process. EPERM means it exists (another user's), so it stays.
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
    ::unlink(it->path().c_str());
  }
}

// The temporary file a checkpoint is written to before it is renamed over the
// target. Unless commit() is called, the destructor removes it, so that every
// failure path (including exceptions from deeper down) leaves no litter.
class TempFile {
 public:
  explicit TempFile(const std::filesystem::path& target) : target_(target) {
    std::filesystem::path directory = target.parent_path();
    if (directory.empty()) directory = ".";
    remove_stale_temp_files(directory, target);
    std::random_device entropy;
    constexpr int kAttempts = 16;
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      uint64_t random = (static_cast<uint64_t>(entropy()) << 32) | entropy();
      // ".<name>.tmp.<pid>.<random>": hidden, and recognisable as ours if a
      // killed process leaves one behind (the next save removes it, see
      // remove_stale_temp_files). Built with += for GCC 12, see in_quotes.
      std::string name = temp_prefix(target);
      name += std::to_string(::getpid());
      name += '.';
      name += crc_to_hex(static_cast<uint32_t>(random));
      name += crc_to_hex(static_cast<uint32_t>(random >> 32));
      path_ = directory / name;
      // O_EXCL: never write through a file (or symlink) someone else made.
      int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd >= 0) {
        fd_.reset(fd);
        return;
      }
      if (errno != EEXIST) break;
    }
    throw CheckpointError(target_, "cannot create temporary file " + in_quotes(path_.string()) +
                                       ": " + errno_message(errno));
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!committed_) {
      if (fd_.valid()) fd_.close();
      ::unlink(path_.c_str());
    }
  }

  void write(const void* bytes, size_t size) {
    const char* cursor = static_cast<const char*>(bytes);
    while (size > 0) {
      // write() may be partial; Linux caps one call at about 2 GiB anyway.
      ssize_t written = ::write(fd_.get(), cursor, size);
      if (written < 0) {
        if (errno == EINTR) continue;
        fail("write to temporary file failed");
      }
      cursor += written;
      size -= static_cast<size_t>(written);
    }
  }

  // Makes the data durable and moves it over the target.
  void commit() {
    if (::fsync(fd_.get()) != 0) fail("fsync of temporary file failed");
    if (fd_.close() != 0) fail("closing temporary file failed");
    if (::rename(path_.c_str(), target_.c_str()) != 0) {
      fail("cannot rename temporary file over the target");
    }
    committed_ = true;
    // The rename itself is only durable once the directory entry is synced.
    std::filesystem::path directory = target_.parent_path();
    if (directory.empty()) directory = ".";
    FileDescriptor dir_fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd.valid() || ::fsync(dir_fd.get()) != 0 || dir_fd.close() != 0) {
      const int err = errno;
      throw CheckpointError(target_, "checkpoint was written but syncing directory " +
                                         in_quotes(directory.string()) +
                                         " failed: " + errno_message(err));
    }
  }

 private:
  [[noreturn]] void fail(std::string_view what) {
    const int err = errno;  // Before anything below can overwrite it.
    throw CheckpointError(target_,
                          std::string(what) + " (" + path_.string() + "): " + errno_message(err));
  }

  std::filesystem::path target_;
  std::filesystem::path path_;
  FileDescriptor fd_;
  bool committed_ = false;
};

// Checks one tensor before anything is written and returns its byte size.
uint64_t validated_byte_size(const std::filesystem::path& file, const CheckpointTensor& tensor) {
  const std::string label = "tensor " + in_quotes(tensor.name);
  std::optional<uint64_t> element_size = dtype_size(tensor.dtype);
  if (!element_size) {
    throw CheckpointError(file, label + " has unsupported dtype " + in_quotes(tensor.dtype) +
                                    " (expected F32, F64, I64 or U8)");
  }
  std::vector<uint64_t> dims;
  for (int64_t dim : tensor.shape) {
    if (dim < 0) throw CheckpointError(file, label + " has a negative dimension");
    dims.push_back(static_cast<uint64_t>(dim));
  }
  std::optional<TensorExtent> extent = tensor_extent(dims, *element_size);
  if (!extent) throw CheckpointError(file, label + " has a shape whose size overflows");
  if (extent->bytes != tensor.data.size()) {
    throw CheckpointError(file, label + " has " + std::to_string(tensor.data.size()) +
                                    " bytes of data but its dtype and shape need " +
                                    std::to_string(extent->bytes));
  }
  return extent->bytes;
}

// Builds the padded header with the crc placeholder in it.
std::string build_header(const std::filesystem::path& file, const Checkpoint& ckpt) {
  Json header = Json::object();
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const CheckpointTensor& tensor : ckpt.tensors) {
    if (tensor.name.empty()) throw CheckpointError(file, "a tensor has an empty name");
    if (tensor.name == kMetadataKey) {
      throw CheckpointError(file, "tensor name " + in_quotes(kMetadataKey) + " is reserved");
    }
    if (!names.insert(tensor.name).second) {
      throw CheckpointError(file, "two tensors are named " + in_quotes(tensor.name));
    }
    uint64_t bytes = validated_byte_size(file, tensor);
    header[tensor.name] = {{"dtype", tensor.dtype},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  Json metadata = Json::object();
  for (const auto& [key, value] : ckpt.metadata) {
    if (is_reserved_metadata_key(key)) {
      throw CheckpointError(file, "metadata key " + in_quotes(key) + " is reserved for the format");
    }
    metadata[key] = value;
  }
  metadata[std::string(kFormatKey)] = kFormatName;
  metadata[std::string(kVersionKey)] = std::to_string(kFormatVersion);
  metadata[std::string(kCrcKey)] = kCrcPlaceholder;
  header[std::string(kMetadataKey)] = std::move(metadata);

  std::string text;
  try {
    text = header.dump();  // Compact: the crc location rule relies on it.
  } catch (const Json::exception& e) {
    // nlohmann refuses to emit strings that are not valid UTF-8.
    throw CheckpointError(file,
                          std::string("tensor name or metadata is not valid UTF-8: ") + e.what());
  }
  text.append((kHeaderAlignment - text.size() % kHeaderAlignment) % kHeaderAlignment, ' ');
  return text;
}

// ---------------------------------------------------------------- reading

void read_exact(const std::filesystem::path& file, int fd, void* bytes, size_t size) {
  char* cursor = static_cast<char*>(bytes);
  while (size > 0) {
    ssize_t got = ::read(fd, cursor, size);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw CheckpointError(file, "read failed: " + errno_message(errno));
    }
    if (got == 0)
      throw CheckpointError(file, "unexpected end of file (was it changed while reading?)");
    cursor += got;
    size -= static_cast<size_t>(got);
  }
}

struct TensorEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

std::optional<uint64_t> as_unsigned(const Json& value) {
  // nlohmann stores non-negative integers as number_unsigned; negatives are
  // number_integer and anything with a fraction or exponent is a float.
  if (!value.is_number_unsigned()) return std::nullopt;
  return value.get<uint64_t>();
}

TensorEntry parse_tensor_entry(const std::filesystem::path& file, const std::string& name,
                               const Json& entry, uint64_t buffer_size) {
  const std::string label = "tensor " + in_quotes(name);
  if (name.empty()) throw CheckpointError(file, "a tensor has an empty name");
  if (!entry.is_object()) throw CheckpointError(file, label + ": entry is not a JSON object");
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      throw CheckpointError(file, label + ": unexpected field " + in_quotes(key));
    }
  }
  TensorEntry result{name, {}, {}, 0, 0};

  auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) {
    throw CheckpointError(file, label + ": dtype is missing or not a string");
  }
  result.dtype = dtype->get<std::string>();
  std::optional<uint64_t> element_size = dtype_size(result.dtype);
  if (!element_size) {
    throw CheckpointError(file, label + ": unsupported dtype " + in_quotes(result.dtype) +
                                    " (expected F32, F64, I64 or U8)");
  }

  auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) {
    throw CheckpointError(file, label + ": shape is missing or not an array");
  }
  std::vector<uint64_t> dims;
  for (const Json& dim : *shape) {
    std::optional<uint64_t> value = as_unsigned(dim);
    if (!value || *value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw CheckpointError(
          file, label + ": shape " + shape->dump() + " must contain non-negative integers");
    }
    dims.push_back(*value);
  }
  std::optional<TensorExtent> extent = tensor_extent(dims, *element_size);
  if (!extent) throw CheckpointError(file, label + ": shape " + shape->dump() + " overflows");
  for (uint64_t dim : dims) result.shape.push_back(static_cast<int64_t>(dim));

  auto offsets = entry.find("data_offsets");
  std::optional<uint64_t> begin, end;
  if (offsets != entry.end() && offsets->is_array() && offsets->size() == 2) {
    begin = as_unsigned((*offsets)[0]);
    end = as_unsigned((*offsets)[1]);
  }
  if (!begin || !end) {
    throw CheckpointError(file, label + ": data_offsets must be two non-negative integers");
  }
  if (*begin > *end || *end > buffer_size) {
    throw CheckpointError(file, label + ": data_offsets " + offsets->dump() + " are outside the " +
                                    std::to_string(buffer_size) + "-byte data buffer");
  }
  if (*end - *begin != extent->bytes) {
    throw CheckpointError(file, label + ": data_offsets " + offsets->dump() + " span " +
                                    std::to_string(*end - *begin) + " bytes but dtype " +
                                    result.dtype + " and shape " + shape->dump() + " need " +
                                    std::to_string(extent->bytes));
  }
  result.begin = *begin;
  result.end = *end;
  return result;
}

// Checks the format marker and version; returns the stored crc and the user
// metadata (reserved keys removed).
std::pair<uint32_t, std::map<std::string, std::string>> parse_metadata(
    const std::filesystem::path& file, const Json& header) {
  auto found = header.find(kMetadataKey);
  if (found == header.end()) {
    throw CheckpointError(file, "not a tbgrad checkpoint: header has no __metadata__");
  }
  if (!found->is_object()) throw CheckpointError(file, "__metadata__ is not a JSON object");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : found->items()) {
    if (!value.is_string()) {
      throw CheckpointError(file, "metadata value for " + in_quotes(key) + " is not a string");
    }
    metadata[key] = value.get<std::string>();
  }

  auto format = metadata.find(std::string(kFormatKey));
  if (format == metadata.end()) {
    throw CheckpointError(file,
                          "not a tbgrad checkpoint: metadata has no \"format\" "
                          "(plain safetensors files are not accepted)");
  }
  if (format->second != kFormatName) {
    throw CheckpointError(file, "unsupported format " + in_quotes(format->second) + " (expected " +
                                    in_quotes(kFormatName) + ")");
  }
  auto version_entry = metadata.find(std::string(kVersionKey));
  if (version_entry == metadata.end()) {
    throw CheckpointError(file, "metadata has no \"format_version\"");
  }
  const std::string& version_text = version_entry->second;
  uint64_t version = 0;
  auto [end, error] =
      std::from_chars(version_text.data(), version_text.data() + version_text.size(), version);
  if (error != std::errc() || end != version_text.data() + version_text.size() ||
      version_text.empty() || version == 0) {
    throw CheckpointError(file, "unsupported format_version " + in_quotes(version_text));
  }
  if (version > kFormatVersion) {
    throw CheckpointError(file, "written by a newer tbgrad (format " + version_text +
                                    "); this build reads format " + std::to_string(kFormatVersion));
  }

  auto crc_entry = metadata.find(std::string(kCrcKey));
  if (crc_entry == metadata.end()) throw CheckpointError(file, "metadata has no \"crc32\"");
  std::optional<uint32_t> crc = parse_crc_hex(crc_entry->second);
  if (!crc) {
    throw CheckpointError(
        file, "crc32 " + in_quotes(crc_entry->second) + " is not 8 lowercase hex digits");
  }
  for (std::string_view key : {kFormatKey, kVersionKey, kCrcKey}) metadata.erase(std::string(key));
  return {*crc, std::move(metadata)};
}

}  // namespace

CheckpointError::CheckpointError(const std::filesystem::path& file, std::string_view problem)
    : std::runtime_error("checkpoint '" + file.string() + "': " + std::string(problem)),
      file_(file) {}

const CheckpointTensor* Checkpoint::find(std::string_view name) const {
  auto found = std::find_if(tensors.begin(), tensors.end(),
                            [&](const CheckpointTensor& tensor) { return tensor.name == name; });
  return found == tensors.end() ? nullptr : &*found;
}

void save_checkpoint(const std::filesystem::path& file, const Checkpoint& ckpt) {
  if (!file.has_filename()) throw CheckpointError(file, "path does not name a file");
  std::string header = build_header(file, ckpt);
  const auto length_prefix = encode_u64_le(header.size());

  const std::string placeholder = std::string(kCrcPrefix) + std::string(kCrcPlaceholder) + "\"";
  const size_t placeholder_at = header.find(placeholder);
  // Reserved-key checking and JSON escaping of quotes make this unique.
  if (placeholder_at == std::string::npos || header.rfind(placeholder) != placeholder_at) {
    throw CheckpointError(file, "internal error: crc32 placeholder not unique in header");
  }
  uint32_t crc = crc_update(0, length_prefix.data(), length_prefix.size());
  crc = crc_update(crc, header.data(), header.size());
  for (const CheckpointTensor& tensor : ckpt.tensors) {
    crc = crc_update(crc, tensor.data.data(), tensor.data.size());
  }
  header.replace(placeholder_at + kCrcPrefix.size(), kCrcPlaceholder.size(), crc_to_hex(crc));

  TempFile temp(file);
  temp.write(length_prefix.data(), length_prefix.size());
  temp.write(header.data(), header.size());
  for (const CheckpointTensor& tensor : ckpt.tensors) {
    temp.write(tensor.data.data(), tensor.data.size());
  }
  temp.commit();
}

void write_file_atomically(const std::filesystem::path& file, std::string_view bytes) {
  if (!file.has_filename()) throw CheckpointError(file, "path does not name a file");
  TempFile temp(file);
  temp.write(bytes.data(), bytes.size());
  temp.commit();
}

Checkpoint load_checkpoint(const std::filesystem::path& file) {
  // O_NONBLOCK so that opening a FIFO by mistake fails below instead of hanging.
  FileDescriptor fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) throw CheckpointError(file, "cannot open: " + errno_message(errno));
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) {
    throw CheckpointError(file, "cannot stat: " + errno_message(errno));
  }
  if (S_ISDIR(info.st_mode)) throw CheckpointError(file, "is a directory, not a checkpoint file");
  if (!S_ISREG(info.st_mode)) throw CheckpointError(file, "is not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(info.st_size);

  if (file_size < kLengthPrefixBytes) {
    throw CheckpointError(file, "file is " + std::to_string(file_size) +
                                    " bytes, too short to hold the 8-byte header length");
  }
  std::array<unsigned char, kLengthPrefixBytes> length_prefix{};
  read_exact(file, fd.get(), length_prefix.data(), length_prefix.size());
  const uint64_t header_size = decode_u64_le(length_prefix);
  if (header_size > file_size - kLengthPrefixBytes) {
    throw CheckpointError(file, "header length " + std::to_string(header_size) +
                                    " is larger than the rest of the " + std::to_string(file_size) +
                                    "-byte file");
  }
  if (header_size > kMaxHeaderBytes) {
    throw CheckpointError(
        file, "header length " + std::to_string(header_size) + " exceeds the 100 MiB limit");
  }
  const uint64_t buffer_size = file_size - kLengthPrefixBytes - header_size;

  std::string header_text(header_size, '\0');
  read_exact(file, fd.get(), header_text.data(), header_text.size());
  Json header = Json::parse(header_text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) throw CheckpointError(file, "header is not valid JSON");
  if (!header.is_object()) throw CheckpointError(file, "header is not a JSON object");

  // Format and version first: a newer format may legitimately contain things
  // the checks below would reject, and "newer version" is the useful message.
  auto [stored_crc, metadata] = parse_metadata(file, header);

  std::vector<TensorEntry> entries;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) continue;
    entries.push_back(parse_tensor_entry(file, name, entry, buffer_size));
  }
  // Tensors must tile the data buffer exactly: no overlap (two tensors
  // sharing bytes), no gaps and no trailing bytes that nothing accounts for.
  std::sort(entries.begin(), entries.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  for (const TensorEntry& entry : entries) {
    if (entry.begin < covered) {
      throw CheckpointError(
          file, "tensor " + in_quotes(entry.name) + " overlaps the data of another tensor");
    }
    if (entry.begin > covered) {
      throw CheckpointError(file, "data buffer has " + std::to_string(entry.begin - covered) +
                                      " unused bytes before tensor " + in_quotes(entry.name));
    }
    covered = entry.end;
  }
  if (covered != buffer_size) {
    throw CheckpointError(file, "data buffer has " + std::to_string(buffer_size - covered) +
                                    " trailing bytes after the last tensor");
  }

  // Only now, with every size proven to fit inside the file, read the data.
  const std::string stored_crc_field = std::string(kCrcPrefix) + crc_to_hex(stored_crc) + "\"";
  const size_t crc_digits_at = header_text.find(stored_crc_field);
  if (crc_digits_at == std::string::npos || header_text.rfind(stored_crc_field) != crc_digits_at) {
    throw CheckpointError(file, "crc32 is not stored in canonical form \"crc32\":\"xxxxxxxx\"");
  }
  header_text.replace(crc_digits_at + kCrcPrefix.size(), kCrcPlaceholder.size(), kCrcPlaceholder);
  uint32_t crc = crc_update(0, length_prefix.data(), length_prefix.size());
  crc = crc_update(crc, header_text.data(), header_text.size());

  Checkpoint result;
  result.metadata = std::move(metadata);
  result.tensors.reserve(entries.size());
  for (TensorEntry& entry : entries) {
    CheckpointTensor& tensor = result.tensors.emplace_back();
    tensor.name = std::move(entry.name);
    tensor.dtype = std::move(entry.dtype);
    tensor.shape = std::move(entry.shape);
    tensor.data.resize(entry.end - entry.begin);
    read_exact(file, fd.get(), tensor.data.data(), tensor.data.size());
    crc = crc_update(crc, tensor.data.data(), tensor.data.size());
  }
  if (crc != stored_crc) {
    throw CheckpointError(file, "checksum mismatch: file is corrupt (stored crc32 " +
                                    crc_to_hex(stored_crc) + ", computed " + crc_to_hex(crc) + ")");
  }
  return result;
}

}  // namespace tbgrad::nn
