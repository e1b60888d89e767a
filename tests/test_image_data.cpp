// Image data sets with channels: the CIFAR and PNG-folder readers (generated files read back
// exactly; each malformed file's error names the file and the byte offset), per-channel
// normalisation, and the seeded augmentation (crop and flip on a known image, the same for any
// thread count, different per seed and per epoch).
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <tbgrad.hpp>
#include <vector>

namespace tbgrad {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

Bytes pattern(std::size_t n, std::uint64_t seed) {
  Rng rng(seed);
  Bytes b(n);
  for (auto& v : b) v = static_cast<std::uint8_t>(rng.below(256));
  return b;
}

Bytes read_bytes(const fs::path& f) {
  std::ifstream in(f, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& f, const Bytes& b) {
  std::ofstream out(f, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// The message of the DataError fn throws ("" and a failure when none).
template <typename Fn>
std::string error_of(const Fn& fn) {
  try {
    fn();
  } catch (const data::DataError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no DataError";
  return "";
}

class ImageData : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tbgrad_image_data_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// --- CIFAR ------------------------------------------------------------------------------------

// A CIFAR file written byte by byte here (not by the library's writer): records of the label
// bytes, then 3072 pixels.
Bytes cifar_bytes(const Bytes& pixels, const std::vector<Bytes>& labels) {
  Bytes out;
  const std::size_t n = labels[0].size();
  for (std::size_t i = 0; i < n; ++i) {
    for (const Bytes& l : labels) out.push_back(l[i]);
    out.insert(out.end(), pixels.begin() + static_cast<std::ptrdiff_t>(i * 3072),
               pixels.begin() + static_cast<std::ptrdiff_t>((i + 1) * 3072));
  }
  return out;
}

TEST_F(ImageData, Cifar10FilesReadBackExactlyAndConcatenate) {
  const Bytes p1 = pattern(3 * 3072, 1), p2 = pattern(2 * 3072, 2);
  const Bytes l1 = {3, 0, 9}, l2 = {7, 1};
  write_bytes(dir_ / "a.bin", cifar_bytes(p1, {l1}));
  write_bytes(dir_ / "b.bin", cifar_bytes(p2, {l2}));
  const data::Dataset d = data::read_cifar10({dir_ / "a.bin", dir_ / "b.bin"});
  EXPECT_EQ(d.count, 5);
  EXPECT_EQ(d.channels, 3);
  EXPECT_EQ(d.rows, 32);
  EXPECT_EQ(d.cols, 32);
  EXPECT_EQ(d.example_size(), 3072);
  Bytes all = p1;
  all.insert(all.end(), p2.begin(), p2.end());
  EXPECT_EQ(d.images, all);
  EXPECT_EQ(d.labels, (Bytes{3, 0, 9, 7, 1}));
  // The library's writer makes the same bytes.
  data::write_cifar10(dir_ / "w.bin", 3, p1.data(), l1.data());
  EXPECT_EQ(read_bytes(dir_ / "w.bin"), read_bytes(dir_ / "a.bin"));
}

TEST_F(ImageData, Cifar10SplitsByTheirFileNames) {
  Bytes expect_train, expect_labels;
  for (int i = 1; i <= 5; ++i) {
    const Bytes p = pattern(3072, static_cast<std::uint64_t>(10 + i));
    const Bytes l = {static_cast<std::uint8_t>(i)};
    data::write_cifar10(dir_ / ("data_batch_" + std::to_string(i) + ".bin"), 1, p.data(), l.data());
    expect_train.insert(expect_train.end(), p.begin(), p.end());
    expect_labels.push_back(l[0]);
  }
  const Bytes tp = pattern(2 * 3072, 20), tl = {4, 5};
  data::write_cifar10(dir_ / "test_batch.bin", 2, tp.data(), tl.data());
  const data::Dataset train = data::load_cifar10(dir_, data::Split::kTrain);
  EXPECT_EQ(train.images, expect_train);
  EXPECT_EQ(train.labels, expect_labels);
  const data::Dataset test = data::load_cifar10(dir_, data::Split::kTest);
  EXPECT_EQ(test.images, tp);
  EXPECT_EQ(test.labels, tl);
}

TEST_F(ImageData, Cifar100TakesTheFineOrTheCoarseLabels) {
  const Bytes p = pattern(3 * 3072, 3);
  const Bytes coarse = {19, 0, 5}, fine = {99, 42, 0};
  write_bytes(dir_ / "train.bin", cifar_bytes(p, {coarse, fine}));
  const data::Dataset f = data::load_cifar100(dir_, data::Split::kTrain);
  EXPECT_EQ(f.images, p);
  EXPECT_EQ(f.labels, fine);
  const data::Dataset c = data::read_cifar100({dir_ / "train.bin"}, data::CifarLabels::kCoarse);
  EXPECT_EQ(c.labels, coarse);
  data::write_cifar100(dir_ / "w.bin", 3, p.data(), coarse.data(), fine.data());
  EXPECT_EQ(read_bytes(dir_ / "w.bin"), read_bytes(dir_ / "train.bin"));
}

TEST_F(ImageData, MalformedCifarFilesNameTheFileAndTheByteOffset) {
  const fs::path f = dir_ / "data_batch_1.bin";
  Bytes good = cifar_bytes(pattern(2 * 3072, 4), {{1, 2}});
  // A truncated last record: 2 whole records, the third (at 6146) has 100 bytes.
  Bytes cut = good;
  cut.insert(cut.end(), 100, 7);
  write_bytes(f, cut);
  std::string m = error_of([&] { data::read_cifar10({f}); });
  EXPECT_NE(m.find(f.string()), std::string::npos) << m;
  EXPECT_NE(m.find("truncated record"), std::string::npos) << m;
  EXPECT_NE(m.find("byte offset 6146"), std::string::npos) << m;
  // Shorter than one record.
  write_bytes(f, Bytes(good.begin(), good.begin() + 3000));
  m = error_of([&] { data::read_cifar10({f}); });
  EXPECT_NE(m.find("byte offset 0"), std::string::npos) << m;
  // A label out of range: record 1's label byte, at 3073.
  Bytes bad = good;
  bad[3073] = 10;
  write_bytes(f, bad);
  m = error_of([&] { data::read_cifar10({f}); });
  EXPECT_NE(m.find(f.string()), std::string::npos) << m;
  EXPECT_NE(m.find("label 10 at byte offset 3073"), std::string::npos) << m;
  // CIFAR-100: a fine label of 100 in record 0 (its second byte).
  write_bytes(f, cifar_bytes(pattern(3072, 5), {{3}, {100}}));
  m = error_of([&] { data::read_cifar100({f}); });
  EXPECT_NE(m.find("fine label 100 at byte offset 1"), std::string::npos) << m;
  // A CIFAR-10 file read as CIFAR-100: 3073-byte records are not whole 3074-byte ones.
  write_bytes(f, good);
  m = error_of([&] { data::read_cifar100({f}); });
  EXPECT_NE(m.find("truncated record"), std::string::npos) << m;
  // Empty, missing, a directory, no files.
  write_bytes(f, {});
  m = error_of([&] { data::read_cifar10({f}); });
  EXPECT_NE(m.find("empty file"), std::string::npos) << m;
  m = error_of([&] { data::read_cifar10({dir_ / "nope.bin"}); });
  EXPECT_NE(m.find((dir_ / "nope.bin").string() + ": not found"), std::string::npos) << m;
  m = error_of([&] { data::read_cifar10({dir_}); });
  EXPECT_NE(m.find("is a directory"), std::string::npos) << m;
  m = error_of([&] { data::load_cifar10(dir_, data::Split::kTest); });
  EXPECT_NE(m.find("test_batch.bin"), std::string::npos) << m;
  EXPECT_THROW(data::read_cifar10({}), data::DataError);
}

// --- PNG folders --------------------------------------------------------------------------------

// A PNG written here chunk by chunk (not through libpng), so the reader can be tested on colour
// types and depths the library's writer does not make: 16-bit and palette images.
Bytes png_chunk(const std::string& type, const Bytes& data) {
  Bytes out;
  const auto n = static_cast<std::uint32_t>(data.size());
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(n >> s));
  Bytes body(type.begin(), type.end());
  body.insert(body.end(), data.begin(), data.end());
  out.insert(out.end(), body.begin(), body.end());
  const auto crc = static_cast<std::uint32_t>(crc32(0, body.data(), static_cast<uInt>(body.size())));
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(crc >> s));
  return out;
}

// rows: each row's raw bytes (without the filter byte).
Bytes raw_png(std::uint32_t w, std::uint32_t h, int depth, int color_type,
              const std::vector<Bytes>& rows, const Bytes& plte = {}, const Bytes& trns = {}) {
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  Bytes ihdr;
  for (std::uint32_t v : {w, h}) {
    for (int s = 24; s >= 0; s -= 8) ihdr.push_back(static_cast<std::uint8_t>(v >> s));
  }
  ihdr.insert(ihdr.end(), {static_cast<std::uint8_t>(depth), static_cast<std::uint8_t>(color_type), 0, 0, 0});
  const Bytes c = png_chunk("IHDR", ihdr);
  out.insert(out.end(), c.begin(), c.end());
  for (const auto& [type, data] : {std::pair<std::string, Bytes>{"PLTE", plte}, {"tRNS", trns}}) {
    if (data.empty()) continue;
    const Bytes k = png_chunk(type, data);
    out.insert(out.end(), k.begin(), k.end());
  }
  Bytes raw;
  for (const Bytes& r : rows) {
    raw.push_back(0);
    raw.insert(raw.end(), r.begin(), r.end());
  }
  Bytes z(compressBound(static_cast<uLong>(raw.size())));
  uLongf zn = static_cast<uLongf>(z.size());
  EXPECT_EQ(compress(z.data(), &zn, raw.data(), static_cast<uLong>(raw.size())), Z_OK);
  z.resize(zn);
  const Bytes idat = png_chunk("IDAT", z);
  out.insert(out.end(), idat.begin(), idat.end());
  const Bytes iend = png_chunk("IEND", {});
  out.insert(out.end(), iend.begin(), iend.end());
  return out;
}

TEST_F(ImageData, PngFolderReadsBackExactlyInSortedOrder) {
  // Classes "b" and "a" (sorted: a = 0, b = 1), two 5x3 RGB images in one and one in the other;
  // other files and hidden entries are skipped.
  const int w = 5, h = 3;
  const Bytes x0 = pattern(3 * 15, 6), x1 = pattern(3 * 15, 7), x2 = pattern(3 * 15, 8);
  fs::create_directories(dir_ / "b");
  fs::create_directories(dir_ / "a");
  fs::create_directories(dir_ / ".hidden");
  data::write_png(dir_ / "b" / "2.png", w, h, 3, x1.data());
  data::write_png(dir_ / "b" / "10.PNG", w, h, 3, x0.data());  // "10.PNG" < "2.png" by name
  data::write_png(dir_ / "a" / "z.png", w, h, 3, x2.data());
  write_bytes(dir_ / "b" / "notes.txt", {1, 2, 3});
  write_bytes(dir_ / "a" / ".junk.png", {1, 2, 3});
  const data::ImageFolder f = data::read_image_folder(dir_);
  EXPECT_EQ(f.classes, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(f.data.count, 3);
  EXPECT_EQ(f.data.channels, 3);
  EXPECT_EQ(f.data.rows, h);
  EXPECT_EQ(f.data.cols, w);
  Bytes all = x2;
  all.insert(all.end(), x0.begin(), x0.end());
  all.insert(all.end(), x1.begin(), x1.end());
  EXPECT_EQ(f.data.images, all);
  EXPECT_EQ(f.data.labels, (Bytes{0, 1, 1}));
  EXPECT_EQ(f.files[1], dir_ / "b" / "10.PNG");
}

TEST_F(ImageData, PngColourTypesAndDepthsAreReadOrConverted) {
  // 16-bit gray: samples v * 257 are exactly 8-bit v.
  const Bytes v = {0, 1, 128, 254, 255, 77};
  Bytes row16;
  for (std::uint8_t x : v) row16.insert(row16.end(), {x, x});  // big-endian x * 257
  write_bytes(dir_ / "g16.png", raw_png(6, 1, 16, 0, {row16}));
  data::PngImage g = data::read_png(dir_ / "g16.png");
  EXPECT_EQ(g.channels, 1);
  EXPECT_EQ(g.pixels, v);
  // Palette without and with transparency: RGB, then RGBA.
  const Bytes plte = {10, 20, 30, 40, 50, 60, 70, 80, 90};
  write_bytes(dir_ / "p.png", raw_png(3, 1, 8, 3, {{2, 0, 1}}, plte));
  g = data::read_png(dir_ / "p.png");
  EXPECT_EQ(g.channels, 3);
  EXPECT_EQ(g.pixels, (Bytes{70, 10, 40, 80, 20, 50, 90, 30, 60}));  // planes R, G, B
  write_bytes(dir_ / "pt.png", raw_png(3, 1, 8, 3, {{2, 0, 1}}, plte, {255, 0, 128}));
  g = data::read_png(dir_ / "pt.png");
  EXPECT_EQ(g.channels, 4);
  EXPECT_EQ(Bytes(g.pixels.begin() + 9, g.pixels.end()), (Bytes{128, 255, 0}));  // alpha plane: tRNS of 2, 0, 1
  // Gray + alpha: 2 channels; RGBA asked as RGB drops the alpha (not composited).
  write_bytes(dir_ / "ga.png", raw_png(2, 1, 8, 4, {{9, 100, 200, 0}}));
  g = data::read_png(dir_ / "ga.png");
  EXPECT_EQ(g.channels, 2);
  EXPECT_EQ(g.pixels, (Bytes{9, 200, 100, 0}));
  write_bytes(dir_ / "rgba.png", raw_png(1, 1, 8, 6, {{1, 2, 3, 0}}));
  g = data::read_png(dir_ / "rgba.png", 3);
  EXPECT_EQ(g.pixels, (Bytes{1, 2, 3}));
  // Gray to RGB copies the value into every plane; 1-bit gray is 0 or 255.
  write_bytes(dir_ / "g1.png", raw_png(3, 1, 1, 0, {{0b10100000}}));
  g = data::read_png(dir_ / "g1.png", 3);
  EXPECT_EQ(g.pixels, (Bytes{255, 0, 255, 255, 0, 255, 255, 0, 255}));
  // A folder of mixed colour types read as 3 channels.
  fs::create_directories(dir_ / "f" / "c");
  fs::copy_file(dir_ / "p.png", dir_ / "f" / "c" / "1.png");
  fs::copy_file(dir_ / "g1.png", dir_ / "f" / "c" / "2.png");
  const data::ImageFolder f = data::read_image_folder(dir_ / "f", {.channels = 3});
  EXPECT_EQ(f.data.count, 2);
  EXPECT_EQ(f.data.example_size(), 9);
  // ...but as they are, their channel counts differ.
  const std::string m = error_of([&] { data::read_image_folder(dir_ / "f"); });
  EXPECT_NE(m.find((dir_ / "f" / "c" / "2.png").string()), std::string::npos) << m;
  EXPECT_NE(m.find("3x1 with 1 channel"), std::string::npos) << m;
  EXPECT_NE(m.find("3x1 with 3 channels"), std::string::npos) << m;
}

TEST_F(ImageData, MalformedPngFoldersNameTheFileOrFolderAndTheOffset) {
  // No classes.
  std::string m = error_of([&] { data::read_image_folder(dir_); });
  EXPECT_NE(m.find(dir_.string() + ": no classes"), std::string::npos) << m;
  m = error_of([&] { data::read_image_folder(dir_ / "missing"); });
  EXPECT_NE(m.find((dir_ / "missing").string()), std::string::npos) << m;
  // An empty class folder.
  fs::create_directories(dir_ / "a");
  fs::create_directories(dir_ / "b");
  data::write_png(dir_ / "a" / "1.png", 4, 4, 1, pattern(16, 9).data());
  m = error_of([&] { data::read_image_folder(dir_); });
  EXPECT_NE(m.find((dir_ / "b").string() + ": empty class folder"), std::string::npos) << m;
  // Mixed sizes: names both files.
  data::write_png(dir_ / "b" / "1.png", 4, 5, 1, pattern(20, 9).data());
  m = error_of([&] { data::read_image_folder(dir_); });
  EXPECT_NE(m.find((dir_ / "b" / "1.png").string() + ": image is 4x5"), std::string::npos) << m;
  EXPECT_NE(m.find((dir_ / "a" / "1.png").string()), std::string::npos) << m;
  EXPECT_NE(m.find("byte offset 16"), std::string::npos) << m;
  fs::remove(dir_ / "b" / "1.png");
  // Damaged files in class b: each error names the file and a byte offset.
  const Bytes good = read_bytes(dir_ / "a" / "1.png");
  const fs::path bad = dir_ / "b" / "bad.png";
  const auto expect_offset = [&](const Bytes& bytes, const std::string& what) {
    write_bytes(bad, bytes);
    const std::string e = error_of([&] { data::read_image_folder(dir_); });
    EXPECT_NE(e.find(bad.string() + ": "), std::string::npos) << e;
    EXPECT_NE(e.find(what), std::string::npos) << e;
  };
  expect_offset(Bytes(good.begin(), good.end() - 15), "truncated PNG: chunk 'IDAT' at byte offset ");
  expect_offset(Bytes(good.begin(), good.end() - 12), "without its final IEND chunk");
  expect_offset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "signature is missing at byte offset 0");
  Bytes crc = good;
  crc[20] ^= 1;  // inside IHDR's data: its CRC no longer matches
  expect_offset(crc, "chunk 'IHDR' at byte offset 8 fails its CRC check");
  // Valid chunks, but IDAT is not a zlib stream: libpng's error, with where it stopped.
  const Bytes not_zlib = [] {
    Bytes b = raw_png(2, 2, 8, 0, {{1, 2}, {3, 4}});
    const Bytes junk = png_chunk("IDAT", {1, 2, 3, 4, 5, 6, 7, 8});
    const std::size_t at = 8 + 25;  // after the signature and IHDR
    const Bytes iend = png_chunk("IEND", {});
    b.resize(at);
    b.insert(b.end(), junk.begin(), junk.end());
    b.insert(b.end(), iend.begin(), iend.end());
    return b;
  }();
  expect_offset(not_zlib, "stopped at byte offset");
  // A header claiming 16384x16384 with a few bytes of data: refused before decoding.
  expect_offset(raw_png(16384, 1024, 8, 0, {}), "cannot hold a 16384x1024 image");
  expect_offset(raw_png(20000, 1, 8, 0, {}), "over the limits");
  expect_offset(raw_png(0, 1, 8, 0, {}), "IHDR at byte offset 16 says 0x1");
}

// --- normalisation ------------------------------------------------------------------------------

data::Dataset rgb_dataset(std::int64_t count, int rows, int cols, std::uint64_t seed) {
  data::Dataset d;
  d.count = count;
  d.channels = 3;
  d.rows = rows;
  d.cols = cols;
  d.images = pattern(static_cast<std::size_t>(count * 3 * rows * cols), seed);
  for (std::int64_t i = 0; i < count; ++i) d.labels.push_back(static_cast<std::uint8_t>(i % 4));
  return d;
}

TEST(Normalisation, PerChannelMeanAndStddevAreApplied) {
  data::Dataset d = rgb_dataset(5, 3, 4, 11);
  const std::vector<std::int64_t> idx = {4, 1};
  Tensor images({2, 3, 3, 4}, DType::kF32), labels({2}, DType::kI32);
  data::load_examples(d, idx, images, labels);  // none by default: pixel / 255
  for (std::int64_t j = 0; j < 2 * 36; ++j) {
    const std::size_t at = static_cast<std::size_t>(idx[static_cast<std::size_t>(j / 36)] * 36 + j % 36);
    ASSERT_EQ(images.data<float>()[j], static_cast<float>(d.images[at]) * (1.0f / 255.0f));
  }
  d.mean = {0.5f, 0.25f, 0.125f};
  d.stddev = {0.2f, 0.5f, 2.0f};
  data::load_examples(d, idx, images, labels);
  for (std::int64_t j = 0; j < 2 * 36; ++j) {
    const std::size_t at = static_cast<std::size_t>(idx[static_cast<std::size_t>(j / 36)] * 36 + j % 36);
    const auto c = static_cast<std::size_t>((j % 36) / 12);
    const double want = (d.images[at] / 255.0 - d.mean[c]) / d.stddev[c];
    ASSERT_NEAR(images.data<float>()[j], want, 1e-6) << j;
  }
  EXPECT_EQ(labels.data<std::int32_t>()[0], d.labels[4]);
  // Malformed: the wrong number of values, a zero or NaN stddev.
  d.stddev = {1.0f, 1.0f};
  EXPECT_THROW(data::load_examples(d, idx, images, labels), data::DataError);
  d.stddev = {1.0f, 0.0f, 1.0f};
  EXPECT_THROW(data::load_examples(d, idx, images, labels), data::DataError);
  d.stddev = {1.0f, NAN, 1.0f};
  EXPECT_THROW(data::load_examples(d, idx, images, labels), data::DataError);
}

TEST(Normalisation, ChannelStatsAreEachChannelsMeanAndStddev) {
  const data::Dataset d = rgb_dataset(7, 5, 3, 12);
  const data::ChannelStats s = data::channel_stats(d);
  ASSERT_EQ(s.mean.size(), 3u);
  for (std::size_t c = 0; c < 3; ++c) {
    double sum = 0, sq = 0;
    int n = 0;
    for (std::int64_t k = 0; k < d.count; ++k) {
      for (int j = 0; j < 15; ++j) {
        const double x = d.images[static_cast<std::size_t>(k * 45 + static_cast<std::int64_t>(c) * 15 + j)] / 255.0;
        sum += x;
        sq += x * x;
        ++n;
      }
    }
    const double mean = sum / n;
    EXPECT_NEAR(s.mean[c], mean, 1e-6);
    EXPECT_NEAR(s.stddev[c], std::sqrt(sq / n - mean * mean), 1e-6);
  }
  // Normalised by its own statistics, a channel has mean 0 and stddev 1.
  data::Dataset n = d;
  n.mean = s.mean;
  n.stddev = s.stddev;
  data::Batcher b(n, 7);
  b.fill(0);
  double sum = 0, sq = 0;
  for (std::int64_t k = 0; k < 7; ++k) {
    for (int j = 0; j < 15; ++j) {
      const double x = b.images(0).data<float>()[k * 45 + j];  // channel 0
      sum += x;
      sq += x * x;
    }
  }
  EXPECT_NEAR(sum / 105, 0.0, 1e-5);
  EXPECT_NEAR(sq / 105, 1.0, 1e-4);
}

// --- augmentation -------------------------------------------------------------------------------

// The augmented image as torchvision makes it: pad with zeros, crop at (dy, dx), then mirror;
// built explicitly, step by step.
std::vector<float> reference_augment(const data::Dataset& d, std::int64_t k, int pad,
                                     const data::AugmentDraw& draw) {
  const int C = d.channels, H = d.rows, W = d.cols, PH = H + 2 * pad, PW = W + 2 * pad;
  std::vector<float> padded(static_cast<std::size_t>(C * PH * PW), 0.0f);
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        padded[static_cast<std::size_t>((c * PH + y + pad) * PW + x + pad)] =
            d.images[static_cast<std::size_t>(k * C * H * W + (c * H + y) * W + x)];
  std::vector<float> out(static_cast<std::size_t>(C * H * W));
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const int xs = draw.flip ? W - 1 - x : x;
        const float p = padded[static_cast<std::size_t>((c * PH + y + draw.dy) * PW + xs + draw.dx)];
        out[static_cast<std::size_t>((c * H + y) * W + x)] = p * (1.0f / 255.0f);
      }
  return out;
}

TEST(Augment, CropAndFlipMatchPaddingCroppingAndMirroring) {
  const data::Dataset d = rgb_dataset(3, 4, 5, 13);
  const data::Augment aug{.pad = 2, .flip = true, .seed = 99};
  int flips = 0;
  std::vector<int> seen_dy(5, 0), seen_dx(5, 0);
  Tensor images({1, 3, 4, 5}, DType::kF32);
  for (std::uint64_t epoch = 0; epoch < 200; ++epoch) {
    const std::int64_t k = static_cast<std::int64_t>(epoch % 3);
    const data::AugmentDraw draw = data::augment_draw(aug, epoch, k);
    ASSERT_GE(draw.dy, 0);
    ASSERT_LE(draw.dy, 4);
    ASSERT_GE(draw.dx, 0);
    ASSERT_LE(draw.dx, 4);
    ++seen_dy[static_cast<std::size_t>(draw.dy)];
    ++seen_dx[static_cast<std::size_t>(draw.dx)];
    flips += draw.flip;
    data::load_images(d, std::vector<std::int64_t>{k}, images, aug, epoch);
    const std::vector<float> want = reference_augment(d, k, 2, draw);
    ASSERT_TRUE(std::equal(want.begin(), want.end(), images.data<float>())) << "epoch " << epoch;
  }
  for (int i = 0; i < 5; ++i) {
    EXPECT_GT(seen_dy[static_cast<std::size_t>(i)], 10);
    EXPECT_GT(seen_dx[static_cast<std::size_t>(i)], 10);
  }
  EXPECT_GT(flips, 70);
  EXPECT_LT(flips, 130);
  // Flip only, crop only.
  const data::AugmentDraw f = data::augment_draw({.flip = true}, 1, 0);
  EXPECT_EQ(f.dy, 0);
  EXPECT_EQ(f.dx, 0);
  const data::AugmentDraw c = data::augment_draw({.pad = 3}, 1, 0);
  EXPECT_FALSE(c.flip);
}

TEST(Augment, APaddedPixelIsZeroNormalised) {
  data::Dataset d = rgb_dataset(1, 2, 2, 14);
  d.mean = {0.5f, 0.5f, 0.5f};
  d.stddev = {0.25f, 0.5f, 1.0f};
  // Find a draw whose window starts above the image: its first row is padding.
  const data::Augment aug{.pad = 1, .seed = 3};
  std::uint64_t epoch = 0;
  while (data::augment_draw(aug, epoch, 0).dy != 0) ++epoch;
  Tensor images({1, 3, 2, 2}, DType::kF32);
  data::load_images(d, std::vector<std::int64_t>{0}, images, aug, epoch);
  EXPECT_EQ(images.data<float>()[0], -2.0f);  // (0 - 0.5) / 0.25
  EXPECT_EQ(images.data<float>()[4], -1.0f);  // (0 - 0.5) / 0.5
  EXPECT_EQ(images.data<float>()[8], -0.5f);
}

TEST(Augment, BatchesDifferPerSeedAndEpochAndRepeatForTheSame) {
  const data::Dataset d = rgb_dataset(10, 6, 6, 15);
  const auto batch = [&](std::uint64_t seed, std::uint64_t epoch) {
    data::Batcher b(d, 10, 0, {.pad = 2, .flip = true, .seed = seed});
    b.set_epoch(epoch);
    b.fill(0);
    const float* p = b.images(0).data<float>();
    return std::vector<float>(p, p + b.images(0).numel());
  };
  EXPECT_EQ(batch(1, 1), batch(1, 1));
  EXPECT_NE(batch(1, 1), batch(2, 1));
  EXPECT_NE(batch(1, 1), batch(1, 2));
  data::Batcher plain(d, 10);
  plain.fill(0);
  EXPECT_EQ(plain.images(0).shape(), (Shape{10, 3, 6, 6}));
  EXPECT_THROW(data::Batcher(d, 10, 0, {.pad = -1}), data::DataError);
}

// A linear classifier of 3x8x8 images, trained through nn::Trainer with augmentation.
nn::ModelGraph linear_model(Graph& g, nn::ParamStore& p, std::int64_t b) {
  nn::ModelGraph m;
  m.inputs = g.input("images", {b, 3, 8, 8});
  m.labels = g.input_labels("labels", {b});
  m.outputs = linear(flatten(m.inputs), p.param(g, "fc.w", {4, 192}), p.param(g, "fc.b", {4}));
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

std::vector<float> train_weights(int threads, const data::Augment& augment, std::int64_t micro) {
  ThreadScope scope(threads);
  data::Dataset d = rgb_dataset(40, 8, 8, 16);
  d.mean = {0.4f, 0.5f, 0.6f};
  d.stddev = {0.3f, 0.2f, 0.25f};
  nn::ParamStore store;
  nn::create_parameters(linear_model, store);
  nn::Rng rng(1);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer trainer(linear_model, store, sgd,
                      {.batch_size = 16, .micro_batch = micro, .augment = augment});
  data::Batcher batches(d, 16);
  for (int epoch = 1; epoch <= 2; ++epoch) nn::train_epoch(trainer, batches, rng, {.epoch = epoch});
  std::vector<float> w;
  for (const Tensor& t : store.tensors()) w.insert(w.end(), t.data<float>(), t.data<float>() + t.numel());
  return w;
}

TEST(Augment, TrainingIsTheSameForAnyThreadCountAndMicroBatch) {
  const data::Augment aug{.pad = 2, .flip = true, .seed = 5};
  const std::vector<float> one = train_weights(1, aug, 16);
  for (const int threads : {1, 2, 3}) {
    for (const std::int64_t micro : {4, 5}) {
      // Micro-batches change the order gradients are summed in, not the images.
      EXPECT_EQ(train_weights(threads, aug, micro), train_weights(1, aug, micro))
          << threads << " threads, micro-batch " << micro;
    }
  }
  EXPECT_EQ(train_weights(2, aug, 16), one);
  EXPECT_NE(train_weights(1, {}, 16), one);  // the augmentation is applied
  EXPECT_NE(train_weights(1, {.pad = 2, .flip = true, .seed = 6}, 16), one);
}

TEST(Augment, TrainEpochRefusesABatcherAugmentationTheTrainerLacks) {
  const data::Dataset d = rgb_dataset(8, 8, 8, 17);
  nn::ParamStore store;
  nn::create_parameters(linear_model, store);
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer trainer(linear_model, store, sgd, {.batch_size = 4});
  data::Batcher batches(d, 4, 0, {.flip = true});
  nn::Rng rng(1);
  EXPECT_THROW(nn::train_epoch(trainer, batches, rng), Error);
}

}  // namespace
}  // namespace tbgrad
