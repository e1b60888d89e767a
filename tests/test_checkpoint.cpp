#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <bit>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/checkpoint.hpp"

namespace tbgrad::nn {
namespace {

namespace fs = std::filesystem;

// The tests build tensor bytes from native values; the format is little-endian.
static_assert(std::endian::native == std::endian::little);

template <typename T>
std::vector<std::byte> to_bytes(const std::vector<T>& values) {
  std::vector<std::byte> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<unsigned char> read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& file, const std::vector<unsigned char>& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << file;
}

uint32_t crc_of(const std::vector<unsigned char>& bytes) {
  return static_cast<uint32_t>(crc32_z(0, bytes.data(), bytes.size()));
}

std::string hex8(uint32_t value) {
  char text[9];
  std::snprintf(text, sizeof(text), "%08x", value);
  return text;
}

// Writes a file in the checkpoint layout from a hand-written header, so that
// each validation rule can be exercised on its own. If the header contains
// the placeholder "crc32":"00000000" it is replaced by the correct checksum,
// following the definition in docs/checkpoint-format.md; otherwise the header
// is written as given.
void write_raw(const fs::path& file, std::string header, const std::vector<unsigned char>& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  // Assembled in a string: GCC 12 at -O3 misreports vector::insert here
  // (-Warray-bounds false positive).
  std::string text;
  for (size_t i = 0; i < 8; ++i) text.push_back(static_cast<char>(header.size() >> (8 * i)));
  text += header;
  text.append(data.begin(), data.end());
  std::vector<unsigned char> bytes(text.begin(), text.end());
  const std::string placeholder = "\"crc32\":\"00000000\"";
  auto at = std::search(bytes.begin(), bytes.end(), placeholder.begin(), placeholder.end());
  if (at != bytes.end()) {
    const std::string digits = hex8(crc_of(bytes));
    std::copy(digits.begin(), digits.end(), at + 9);
  }
  write_bytes(file, bytes);
}

// A valid tbgrad metadata block, optionally with extra fields.
std::string metadata_json(const std::string& version = "1", const std::string& extra = "") {
  return R"("__metadata__":{)" + extra + R"("crc32":"00000000","format":"tbgrad-checkpoint",)" +
         R"("format_version":")" + version + R"("})";
}

// Runs load_checkpoint and checks that it throws CheckpointError whose
// message names the file and contains `expected`.
void expect_load_error(const fs::path& file, const std::string& expected) {
  try {
    load_checkpoint(file);
    ADD_FAILURE() << "load_checkpoint(" << file << ") did not throw; expected: " << expected;
  } catch (const CheckpointError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(file.string()), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos)
        << "message: " << message << "\nexpected to contain: " << expected;
    EXPECT_EQ(error.file(), file);
  }
}

Checkpoint sample_checkpoint() {
  Checkpoint ckpt;
  ckpt.metadata = {{"epoch", "12"}, {"optimizer", "adam"}, {"note", "caf\xc3\xa9 \xe2\x9c\x93"}};
  ckpt.tensors = {
      {"layer1.weight", "F32", {2, 3}, to_bytes<float>({1.5f, -2.f, 0.f, 3.25f, 1e-7f, -1e30f})},
      {"layer1.bias", "F32", {3}, to_bytes<float>({0.1f, 0.2f, 0.3f})},
      {"scalar", "F32", {}, to_bytes<float>({42.f})},
      {"empty", "F32", {0, 4}, {}},
      {"double.a", "F64", {2, 2}, to_bytes<double>({1.0, -2.5, 1e300, 3.14159})},
      {"double.b", "F64", {1}, to_bytes<double>({-0.0})},
      {"steps", "I64", {3}, to_bytes<int64_t>({0, -1, INT64_MAX})},
      {"counts", "I64", {2, 1}, to_bytes<int64_t>({INT64_MIN, 7})},
      {"mask", "U8", {5}, to_bytes<uint8_t>({0, 1, 127, 128, 255})},
      {"image", "U8", {2, 1, 3}, to_bytes<uint8_t>({9, 8, 7, 6, 5, 4})},
  };
  return ckpt;
}

// Small enough that truncating or flipping at every offset stays fast.
Checkpoint tiny_checkpoint() {
  Checkpoint ckpt;
  ckpt.metadata = {{"k", "v"}};
  // The empty tensor in the middle guards against a checksum that restarts at
  // empty data (zlib's crc32 returns 0 for a null buffer).
  ckpt.tensors = {{"w", "F32", {2}, to_bytes<float>({1.f, 2.f})},
                  {"e", "F64", {0}, {}},
                  {"n", "U8", {3}, to_bytes<uint8_t>({1, 2, 3})}};
  return ckpt;
}

void expect_same(const Checkpoint& expected, const Checkpoint& actual) {
  EXPECT_EQ(expected.metadata, actual.metadata);
  ASSERT_EQ(expected.tensors.size(), actual.tensors.size());
  for (size_t i = 0; i < expected.tensors.size(); ++i) {
    SCOPED_TRACE(expected.tensors[i].name);
    EXPECT_EQ(expected.tensors[i].name, actual.tensors[i].name);
    EXPECT_EQ(expected.tensors[i].dtype, actual.tensors[i].dtype);
    EXPECT_EQ(expected.tensors[i].shape, actual.tensors[i].shape);
    EXPECT_EQ(expected.tensors[i].data, actual.tensors[i].data);
  }
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tbgrad_checkpoint_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(dir_, ignored);
  }

  // Names of everything in the test directory, to spot leftover temp files.
  std::vector<std::string> directory_listing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

TEST_F(CheckpointTest, RoundTripsEveryDtypeShapeAndMetadata) {
  const Checkpoint original = sample_checkpoint();
  const fs::path file = dir_ / "model.safetensors";
  save_checkpoint(file, original);
  const Checkpoint loaded = load_checkpoint(file);
  expect_same(original, loaded);

  ASSERT_NE(loaded.find("double.a"), nullptr);
  EXPECT_EQ(loaded.find("double.a")->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(loaded.find("no.such.tensor"), nullptr);
  EXPECT_EQ(directory_listing(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(CheckpointTest, EmptyCheckpointRoundTrips) {
  const fs::path file = dir_ / "empty.safetensors";
  save_checkpoint(file, Checkpoint{});
  expect_same(Checkpoint{}, load_checkpoint(file));
}

TEST_F(CheckpointTest, LoadedCheckpointCanBeSavedAgain) {
  const fs::path first = dir_ / "a.safetensors";
  const fs::path second = dir_ / "b.safetensors";
  save_checkpoint(first, sample_checkpoint());
  save_checkpoint(second, load_checkpoint(first));
  EXPECT_EQ(read_bytes(first), read_bytes(second));
}

TEST_F(CheckpointTest, FileHasSafetensorsLayoutAndDocumentedChecksum) {
  const fs::path file = dir_ / "model.safetensors";
  save_checkpoint(file, sample_checkpoint());
  std::vector<unsigned char> bytes = read_bytes(file);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_size = 0;
  for (size_t i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  ASSERT_LE(8 + header_size, bytes.size());
  EXPECT_EQ(header_size % 8, 0u) << "header must be padded to a multiple of 8";
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(header_size));
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}')) << "padding must be spaces";

  const nlohmann::json json = nlohmann::json::parse(header);
  const auto& metadata = json.at("__metadata__");
  EXPECT_EQ(metadata.at("format"), "tbgrad-checkpoint");
  EXPECT_EQ(metadata.at("format_version"), "1");
  EXPECT_EQ(metadata.at("epoch"), "12");
  EXPECT_EQ(json.at("layer1.weight").at("dtype"), "F32");
  EXPECT_EQ(json.at("layer1.weight").at("shape"), nlohmann::json({2, 3}));
  EXPECT_EQ(json.at("layer1.weight").at("data_offsets"), nlohmann::json({0, 24}));
  EXPECT_EQ(json.at("mask").at("dtype"), "U8");
  uint64_t data_size = 0;
  for (const auto& [name, entry] : json.items()) {
    if (name != "__metadata__")
      data_size +=
          entry.at("data_offsets")[1].get<uint64_t>() - entry.at("data_offsets")[0].get<uint64_t>();
  }
  EXPECT_EQ(8 + header_size + data_size, bytes.size());

  // The checksum is CRC-32 of the whole file with its own 8 digits zeroed.
  const std::string stored = metadata.at("crc32");
  const std::string field = "\"crc32\":\"" + stored + "\"";
  auto at = std::search(bytes.begin(), bytes.end(), field.begin(), field.end());
  ASSERT_NE(at, bytes.end());
  std::fill(at + 9, at + 17, '0');
  EXPECT_EQ(hex8(crc_of(bytes)), stored);
}

TEST_F(CheckpointTest, SaveReplacesExistingFileWithoutLeavingTempFiles) {
  const fs::path file = dir_ / "model.safetensors";
  save_checkpoint(file, sample_checkpoint());
  save_checkpoint(file, tiny_checkpoint());
  expect_same(tiny_checkpoint(), load_checkpoint(file));
  EXPECT_EQ(directory_listing(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(CheckpointTest, RelativePathInCurrentDirectoryWorks) {
  const fs::path previous = fs::current_path();
  fs::current_path(dir_);
  save_checkpoint("relative.safetensors", tiny_checkpoint());
  Checkpoint loaded = load_checkpoint("relative.safetensors");
  fs::current_path(previous);
  expect_same(tiny_checkpoint(), loaded);
}

TEST_F(CheckpointTest, TruncationAtEveryOffsetIsDetected) {
  const fs::path original = dir_ / "tiny.safetensors";
  save_checkpoint(original, tiny_checkpoint());
  const std::vector<unsigned char> bytes = read_bytes(original);
  const fs::path file = dir_ / "truncated.safetensors";
  for (size_t length = 0; length < bytes.size(); ++length) {
    SCOPED_TRACE("truncated to " + std::to_string(length) + " of " + std::to_string(bytes.size()));
    write_bytes(
        file, std::vector<unsigned char>(bytes.begin(), bytes.begin() + static_cast<long>(length)));
    EXPECT_THROW(load_checkpoint(file), CheckpointError);
  }
}

TEST_F(CheckpointTest, EveryChangedByteIsDetected) {
  const fs::path original = dir_ / "tiny.safetensors";
  save_checkpoint(original, tiny_checkpoint());
  const std::vector<unsigned char> bytes = read_bytes(original);
  const fs::path file = dir_ / "flipped.safetensors";
  // Several patterns per byte: a low bit (digit/letter neighbours, which keep
  // the JSON valid), case/space toggling, the top bit and all bits.
  for (size_t offset = 0; offset < bytes.size(); ++offset) {
    for (unsigned char mask : {0x01, 0x02, 0x20, 0x80, 0xFF}) {
      SCOPED_TRACE("byte " + std::to_string(offset) + " xor " + std::to_string(mask));
      std::vector<unsigned char> corrupted = bytes;
      corrupted[offset] ^= mask;
      write_bytes(file, corrupted);
      EXPECT_THROW(load_checkpoint(file), CheckpointError);
    }
  }
}

TEST_F(CheckpointTest, ChangedMetadataValueWithValidJsonIsCaughtByChecksum) {
  const fs::path file = dir_ / "model.safetensors";
  save_checkpoint(file, sample_checkpoint());
  std::vector<unsigned char> bytes = read_bytes(file);
  const std::string value = "\"epoch\":\"12\"";
  auto at = std::search(bytes.begin(), bytes.end(), value.begin(), value.end());
  ASSERT_NE(at, bytes.end());
  at[10] = '3';  // "12" -> "13": still valid JSON, same length.
  write_bytes(file, bytes);
  expect_load_error(file, "checksum mismatch: file is corrupt");
}

TEST_F(CheckpointTest, ChangedDataByteIsCaughtByChecksum) {
  const fs::path file = dir_ / "model.safetensors";
  save_checkpoint(file, sample_checkpoint());
  std::vector<unsigned char> bytes = read_bytes(file);
  bytes.back() ^= 0x10;
  write_bytes(file, bytes);
  expect_load_error(file, "checksum mismatch: file is corrupt");
}

TEST_F(CheckpointTest, NewerFormatVersionIsRefusedWithClearMessage) {
  const fs::path file = dir_ / "future.safetensors";
  write_raw(file, "{" + metadata_json("2") + "}", {});
  expect_load_error(file, "written by a newer tbgrad (format 2); this build reads format 1");
}

TEST_F(CheckpointTest, ValidHandWrittenFileLoads) {
  // Guards the malformed cases below: the helper itself makes loadable files.
  const fs::path file = dir_ / "hand.safetensors";
  write_raw(file,
            R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)" +
                metadata_json("1", R"("x":"y",)") + "}",
            {7, 9});
  Checkpoint loaded = load_checkpoint(file);
  ASSERT_EQ(loaded.tensors.size(), 1u);
  EXPECT_EQ(loaded.tensors[0].data, (std::vector<std::byte>{std::byte{7}, std::byte{9}}));
  EXPECT_EQ(loaded.metadata, (std::map<std::string, std::string>{{"x", "y"}}));
}

struct MalformedCase {
  std::string label;
  std::string header;
  std::vector<unsigned char> data;
  std::string expected_message;
};

std::string tensor_json(const std::string& name, const std::string& fields) {
  return "\"" + name + "\":{" + fields + "},";
}

std::vector<MalformedCase> malformed_cases() {
  const std::string meta = metadata_json();
  return {
      {"not_json", "{not json", {}, "header is not valid JSON"},
      {"json_array", "[1,2,3]", {}, "header is not a JSON object"},
      {"invalid_utf8", "{\"\xff\":1," + meta + "}", {}, "header is not valid JSON"},
      {"unknown_dtype",
       "{" + tensor_json("t", R"("dtype":"F16","shape":[1],"data_offsets":[0,2])") + meta + "}",
       {0, 0},
       "unsupported dtype 'F16'"},
      {"dtype_not_string",
       "{" + tensor_json("t", R"("dtype":4,"shape":[1],"data_offsets":[0,4])") + meta + "}",
       {0, 0, 0, 0},
       "dtype is missing or not a string"},
      {"negative_dim",
       "{" + tensor_json("t", R"("dtype":"U8","shape":[-1],"data_offsets":[0,0])") + meta + "}",
       {},
       "must contain non-negative integers"},
      {"fractional_dim",
       "{" + tensor_json("t", R"("dtype":"U8","shape":[1.5],"data_offsets":[0,1])") + meta + "}",
       {0},
       "must contain non-negative integers"},
      {"dim_above_int64",
       "{" +
           tensor_json("t", R"("dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,1])") +
           meta + "}",
       {0},
       "must contain non-negative integers"},
      {"shape_product_overflows",
       "{" +
           tensor_json("t",
                       R"("dtype":"U8","shape":[4294967296,4294967296,2],"data_offsets":[0,0])") +
           meta + "}",
       {},
       "overflows"},
      {"byte_size_overflows",
       "{" +
           tensor_json("t", R"("dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0])") +
           meta + "}",
       {},
       "overflows"},
      {"shape_missing",
       "{" + tensor_json("t", R"("dtype":"U8","data_offsets":[0,1])") + meta + "}",
       {0},
       "shape is missing or not an array"},
      {"offsets_disagree_with_shape",
       "{" + tensor_json("t", R"("dtype":"F32","shape":[2],"data_offsets":[0,4])") + meta + "}",
       {0, 0, 0, 0},
       "span 4 bytes but dtype F32 and shape [2] need 8"},
      {"offsets_beyond_buffer",
       "{" + tensor_json("t", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + meta + "}",
       {0, 0, 0, 0},
       "outside the 4-byte data buffer"},
      {"offsets_reversed",
       "{" + tensor_json("t", R"("dtype":"U8","shape":[0],"data_offsets":[3,1])") + meta + "}",
       {0, 0, 0, 0},
       "outside the"},
      {"offsets_negative",
       "{" + tensor_json("t", R"("dtype":"U8","shape":[1],"data_offsets":[-1,0])") + meta + "}",
       {0},
       "data_offsets must be two non-negative integers"},
      {"offsets_wrong_arity",
       "{" + tensor_json("t", R"("dtype":"U8","shape":[1],"data_offsets":[0,1,2])") + meta + "}",
       {0},
       "data_offsets must be two non-negative integers"},
      {"overlapping_tensors",
       "{" + tensor_json("a", R"("dtype":"U8","shape":[4],"data_offsets":[0,4])") +
           tensor_json("b", R"("dtype":"U8","shape":[2],"data_offsets":[2,4])") + meta + "}",
       {1, 2, 3, 4},
       "overlaps the data of another tensor"},
      {"gap_between_tensors",
       "{" + tensor_json("a", R"("dtype":"U8","shape":[2],"data_offsets":[2,4])") + meta + "}",
       {1, 2, 3, 4},
       "2 unused bytes before tensor 'a'"},
      {"trailing_bytes",
       "{" + tensor_json("a", R"("dtype":"U8","shape":[2],"data_offsets":[0,2])") + meta + "}",
       {1, 2, 3},
       "1 trailing bytes after the last tensor"},
      {"unexpected_tensor_field",
       "{" + tensor_json("a", R"("dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1)") + meta +
           "}",
       {1},
       "unexpected field 'x'"},
      {"tensor_not_object", "{\"a\":[1]," + meta + "}", {}, "entry is not a JSON object"},
      {"empty_tensor_name",
       "{" + tensor_json("", R"("dtype":"U8","shape":[1],"data_offsets":[0,1])") + meta + "}",
       {1},
       "a tensor has an empty name"},
      {"no_metadata",
       R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
       {1},
       "header has no __metadata__"},
      {"metadata_not_object", R"({"__metadata__":[]})", {}, "__metadata__ is not a JSON object"},
      {"metadata_value_not_string",
       "{" + metadata_json("1", R"("epoch":3,)") + "}",
       {},
       "metadata value for 'epoch' is not a string"},
      {"no_format",
       R"({"__metadata__":{"crc32":"00000000","format_version":"1"}})",
       {},
       "not a tbgrad checkpoint"},
      {"foreign_format",
       R"({"__metadata__":{"crc32":"00000000","format":"pt","format_version":"1"}})",
       {},
       "unsupported format 'pt'"},
      {"no_version",
       R"({"__metadata__":{"crc32":"00000000","format":"tbgrad-checkpoint"}})",
       {},
       "no \"format_version\""},
      {"version_not_a_number",
       "{" + metadata_json("one") + "}",
       {},
       "unsupported format_version 'one'"},
      {"version_zero", "{" + metadata_json("0") + "}", {}, "unsupported format_version '0'"},
      {"much_newer_version",
       "{" + metadata_json("17") + "}",
       {},
       "written by a newer tbgrad (format 17)"},
      {"no_crc",
       R"({"__metadata__":{"format":"tbgrad-checkpoint","format_version":"1"}})",
       {},
       "no \"crc32\""},
      {"crc_not_hex",
       R"({"__metadata__":{"crc32":"0000000g","format":"tbgrad-checkpoint","format_version":"1"}})",
       {},
       "is not 8 lowercase hex digits"},
      {"crc_not_canonical_json",
       R"({"__metadata__":{"crc32" : "01234567","format":"tbgrad-checkpoint","format_version":"1"}})",
       {},
       "not stored in canonical form"},
      {"crc_wrong",
       R"({"__metadata__":{"crc32":"01234567","format":"tbgrad-checkpoint","format_version":"1"}})",
       {},
       "checksum mismatch: file is corrupt"},
  };
}

class MalformedCheckpointTest : public CheckpointTest,
                                public ::testing::WithParamInterface<MalformedCase> {};

TEST_P(MalformedCheckpointTest, IsRejectedWithSpecificMessage) {
  const fs::path file = dir_ / "bad.safetensors";
  write_raw(file, GetParam().header, GetParam().data);
  expect_load_error(file, GetParam().expected_message);
}

INSTANTIATE_TEST_SUITE_P(AllCases, MalformedCheckpointTest, ::testing::ValuesIn(malformed_cases()),
                         [](const auto& info) { return info.param.label; });

TEST_F(CheckpointTest, FileShorterThanLengthPrefixIsRejected) {
  const fs::path file = dir_ / "short.safetensors";
  write_bytes(file, {1, 0, 0});
  expect_load_error(file, "too short to hold the 8-byte header length");
}

TEST_F(CheckpointTest, HeaderLengthBeyondFileIsRejected) {
  const fs::path file = dir_ / "long_header.safetensors";
  write_bytes(file, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, '{', '}'});
  expect_load_error(file, "is larger than the rest of the 10-byte file");
}

TEST_F(CheckpointTest, HeaderAbove100MiBIsRejectedWithoutReadingIt) {
  // A sparse file, so the test needs no disk space: the claimed header fits in
  // the file but exceeds the limit.
  const fs::path file = dir_ / "huge_header.safetensors";
  const uint64_t header_size = 100 * 1024 * 1024 + 8;
  std::vector<unsigned char> prefix(8);
  for (size_t i = 0; i < 8; ++i) prefix[i] = static_cast<unsigned char>(header_size >> (8 * i));
  write_bytes(file, prefix);
  fs::resize_file(file, 8 + header_size);
  expect_load_error(file, "exceeds the 100 MiB limit");
}

TEST_F(CheckpointTest, MissingFileAndDirectoryAreRejected) {
  expect_load_error(dir_ / "missing.safetensors", "cannot open");
  expect_load_error(dir_, "is a directory");
}

TEST_F(CheckpointTest, InvalidCheckpointIsRefusedBeforeWriting) {
  const fs::path file = dir_ / "model.safetensors";
  auto expect_save_error = [&](const Checkpoint& ckpt, const std::string& expected) {
    try {
      save_checkpoint(file, ckpt);
      ADD_FAILURE() << "save_checkpoint did not throw; expected: " << expected;
    } catch (const CheckpointError& error) {
      EXPECT_NE(std::string(error.what()).find(expected), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find(file.string()), std::string::npos) << error.what();
    }
  };
  auto with_tensor = [](CheckpointTensor tensor) {
    Checkpoint ckpt;
    ckpt.tensors.push_back(std::move(tensor));
    return ckpt;
  };
  expect_save_error(with_tensor({"t", "F32", {3}, to_bytes<float>({1.f, 2.f})}),
                    "has 8 bytes of data but its dtype and shape need 12");
  expect_save_error(with_tensor({"t", "BF16", {1}, {std::byte{0}, std::byte{0}}}),
                    "unsupported dtype 'BF16'");
  expect_save_error(with_tensor({"t", "U8", {-1}, {}}), "negative dimension");
  expect_save_error(with_tensor({"t", "U8", {INT64_MAX, INT64_MAX}, {}}), "overflows");
  expect_save_error(with_tensor({"", "U8", {0}, {}}), "empty name");
  expect_save_error(with_tensor({"__metadata__", "U8", {0}, {}}), "is reserved");
  expect_save_error(with_tensor({"bad\xff", "U8", {0}, {}}), "not valid UTF-8");
  Checkpoint duplicate = with_tensor({"t", "U8", {0}, {}});
  duplicate.tensors.push_back(duplicate.tensors[0]);
  expect_save_error(duplicate, "two tensors are named 't'");
  Checkpoint reserved;
  reserved.metadata["crc32"] = "x";
  expect_save_error(reserved, "metadata key 'crc32' is reserved");
  EXPECT_TRUE(directory_listing().empty());
}

TEST_F(CheckpointTest, SaveIntoMissingDirectoryFails) {
  const fs::path file = dir_ / "no" / "such" / "dir" / "model.safetensors";
  try {
    save_checkpoint(file, tiny_checkpoint());
    ADD_FAILURE() << "expected CheckpointError";
  } catch (const CheckpointError& error) {
    EXPECT_NE(std::string(error.what()).find(file.string()), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("No such file or directory"), std::string::npos)
        << error.what();
  }
  EXPECT_TRUE(directory_listing().empty());
}

TEST_F(CheckpointTest, FailedRenameRemovesTempFileAndKeepsTarget) {
  // A directory in the target's place makes rename() fail after all data was
  // written and synced: the latest possible failure, and one root hits too.
  const fs::path target = dir_ / "model.safetensors";
  fs::create_directory(target);
  EXPECT_THROW(save_checkpoint(target, tiny_checkpoint()), CheckpointError);
  EXPECT_TRUE(fs::is_directory(target));
  EXPECT_EQ(directory_listing(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(CheckpointTest, UnwritableDirectoryKeepsPreviousFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  const fs::path file = dir_ / "model.safetensors";
  save_checkpoint(file, sample_checkpoint());
  const std::vector<unsigned char> before = read_bytes(file);
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  EXPECT_THROW(save_checkpoint(file, tiny_checkpoint()), CheckpointError);
  fs::permissions(dir_, fs::perms::owner_all);
  EXPECT_EQ(read_bytes(file), before);
  EXPECT_EQ(directory_listing(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(CheckpointTest, WriteErrorMidFileKeepsPreviousFile) {
  // Simulates a full disk: in a child process, RLIMIT_FSIZE makes write()
  // fail with EFBIG once the temp file reaches 4 KiB (SIGXFSZ is ignored so
  // the error is reported instead of killing the process).
  const fs::path file = dir_ / "model.safetensors";
  save_checkpoint(file, tiny_checkpoint());
  const std::vector<unsigned char> before = read_bytes(file);

  Checkpoint big;
  big.tensors.push_back({"big", "U8", {1 << 20}, std::vector<std::byte>(1 << 20, std::byte{7})});

  const pid_t child = ::fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit{};
    ::getrlimit(RLIMIT_FSIZE, &limit);
    limit.rlim_cur = 4096;
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(3);
    int code = 1;  // 1: save succeeded, which it must not.
    try {
      save_checkpoint(file, big);
    } catch (const CheckpointError& error) {
      code = std::string(error.what()).find("File too large") != std::string::npos ? 0 : 2;
    } catch (...) {
      code = 4;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "child died with status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "1: save succeeded, 2: error lacked 'File too large', 3: setrlimit failed, 4: other "
         "exception";
  EXPECT_EQ(read_bytes(file), before);
  EXPECT_EQ(directory_listing(), std::vector<std::string>{"model.safetensors"});
  expect_same(tiny_checkpoint(), load_checkpoint(file));
}

}  // namespace
}  // namespace tbgrad::nn
