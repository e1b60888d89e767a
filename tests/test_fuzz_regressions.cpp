// Replays the fuzz targets' inputs in the normal build: every file kept in
// fuzz/regressions/<target>/ (inputs that once crashed a fuzzer or broke an invariant) and the
// generated seed corpora (fuzz/seeds.cpp). The harnesses are compiled in with renamed entry
// points (see tests/CMakeLists.txt); a regression shows up as a crash, an abort from a broken
// invariant, or an unexpected exception.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/seeds.hpp"

extern "C" int fuzz_idx_entry(const uint8_t* data, size_t size);
extern "C" int fuzz_idx_gz_entry(const uint8_t* data, size_t size);
extern "C" int fuzz_checkpoint_entry(const uint8_t* data, size_t size);
extern "C" int fuzz_image_entry(const uint8_t* data, size_t size);
extern "C" int fuzz_trainer_entry(const uint8_t* data, size_t size);
extern "C" int fuzz_cifar_entry(const uint8_t* data, size_t size);
extern "C" int fuzz_png_entry(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;
using Entry = int (*)(const uint8_t*, size_t);

struct Target {
  const char* name;  // fuzz/regressions/<name>, seeds/<name>
  Entry entry;
};

constexpr Target kTargets[] = {{"idx", fuzz_idx_entry},
                               {"idx_gz", fuzz_idx_gz_entry},
                               {"checkpoint", fuzz_checkpoint_entry},
                               {"image", fuzz_image_entry},
                               {"trainer", fuzz_trainer_entry},
                               {"cifar", fuzz_cifar_entry},
                               {"png", fuzz_png_entry}};

int replay_dir(const fs::path& dir, Entry entry) {
  int count = 0;
  if (!fs::is_directory(dir)) return 0;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().filename().string()[0] != '.' &&
        e.path().filename() != "README.md") {
      files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(in), {}};
    SCOPED_TRACE(f.string());
    entry(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ++count;
  }
  return count;
}

TEST(FuzzRegressions, KeptCrashersNoLongerCrash) {
  int total = 0;
  for (const Target& t : kTargets) {
    total += replay_dir(fs::path(TBGRAD_SOURCE_DIR) / "fuzz" / "regressions" / t.name, t.entry);
  }
  std::printf("fuzz regressions: %d inputs replayed\n", total);
}

TEST(FuzzRegressions, SeedCorporaPassEveryHarness) {
  const fs::path dir = fs::temp_directory_path() / ("tbgrad_seeds_" + std::to_string(::getpid()));
  const int written = tbgrad_fuzz::write_seeds(dir);
  int replayed = 0;
  for (const Target& t : kTargets) replayed += replay_dir(dir / t.name, t.entry);
  fs::remove_all(dir);
  EXPECT_EQ(replayed, written);
  EXPECT_GT(written, 20);
}

}  // namespace
