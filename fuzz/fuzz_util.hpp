// Shared helpers for the libFuzzer targets in fuzz/ (see fuzz/README.md).
//
// The readers under test take a path, so each input is written to a file in a scratch
// directory of this process (on /dev/shm when it exists: a memory file system keeps an
// execution fast), and the reader is called on that file.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace tbgrad_fuzz {

// Stops the run with a message: a broken invariant is a finding, like a crash.
[[noreturn]] inline void die(std::string_view what) {
  std::fprintf(stderr, "fuzz invariant broken: %.*s\n", static_cast<int>(what.size()), what.data());
  std::fflush(stderr);
  std::abort();
}

inline void check(bool ok, std::string_view what) {
  if (!ok) die(what);
}

// The scratch directory, created on first use and removed when the process exits normally.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::error_code ignored;
    std::filesystem::path base = "/dev/shm";
    if (!std::filesystem::is_directory(base, ignored)) base = std::filesystem::temp_directory_path();
    std::filesystem::path made = base / ("tbgrad_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(made);
    std::atexit([] {
      std::error_code e;
      std::filesystem::remove_all(scratch_dir(), e);
    });
    return made;
  }();
  return dir;
}

// Writes `size` bytes to scratch_dir()/name (replacing it) and returns the path.
inline std::filesystem::path write_file(const std::string& name, const uint8_t* data, size_t size) {
  std::filesystem::path file = scratch_dir() / name;
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die("cannot create scratch file");
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) die("cannot write scratch file");
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return file;
}

// Every error message must name the file it is about (the CLI prints only the message).
inline void check_names_file(std::string_view message, const std::filesystem::path& file) {
  if (message.find(file.string()) == std::string_view::npos) {
    std::fprintf(stderr, "message does not name %s: %.*s\n", file.c_str(),
                 static_cast<int>(message.size()), message.data());
    die("error message does not name the file");
  }
}

}  // namespace tbgrad_fuzz
