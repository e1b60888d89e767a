// Seed inputs for the fuzz targets, generated rather than stored: small valid files (and a few
// near misses) made with the project's own writers, laid out as each target reads its input.
#pragma once

#include <filesystem>

namespace tbgrad_fuzz {

// Writes the seeds into root/idx, root/idx_gz, root/checkpoint, root/image, root/trainer,
// root/cifar and root/png (one directory per fuzz target, named like the target without
// "fuzz_"); returns how many files it wrote.
int write_seeds(const std::filesystem::path& root);

}  // namespace tbgrad_fuzz
