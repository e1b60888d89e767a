// Writes the fuzz targets' seed corpora: make_seeds DIR (see fuzz/README.md).
#include <cstdio>
#include <exception>

#include "fuzz/seeds.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  try {
    const int n = tbgrad_fuzz::write_seeds(argv[1]);
    std::printf("make_seeds: %d seed files in %s\n", n, argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
