// Checks on the files tbgrad-mnist is told to write, made before any work starts
// (docs/reliability.md, "Output paths"): an output is never one of the inputs (compared by
// device and inode, not by name), never a device, FIFO, socket or directory, and lies in a
// directory this process can create files in. An empty path is a command-line error.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace tbgrad::mnist {

// A path the command line cannot use. usage(): the command line contradicts itself (an empty
// path, an output that is one of the inputs), exit code 2; otherwise the file system refuses
// (a missing or unwritable directory, a device), exit code 1. The message names the flag and
// the path.
class PathError : public std::runtime_error {
 public:
  PathError(const std::string& message, bool usage) : std::runtime_error(message), usage_(usage) {}
  bool usage() const { return usage_; }

 private:
  bool usage_;
};

struct NamedPath {
  std::string flag;  // "--save"
  std::filesystem::path path;
};

// Throws PathError (usage) if `value` of `flag` is empty.
void require_non_empty(const std::string& flag, const std::string& value);

// The files the idx loader may read from `dir` for the train split (if `train`) and the test
// split: each name raw and with .gz, whether it exists or not (writing a raw name next to a .gz
// file would shadow it).
std::vector<NamedPath> data_files(const std::filesystem::path& dir, bool train);

// How an output is written: replaced by a rename (checkpoints, inspect's JSON), or truncated
// and written in place (CSV logs), which also needs write permission on an existing file.
enum class WriteMode { kReplace, kTruncate };

struct OutputPath {
  std::string flag;
  std::filesystem::path path;
  WriteMode mode = WriteMode::kReplace;
  // An input flag this output may name the same file as (--save over --resume).
  std::string may_replace;
};

// Checks every output against the rules above and against every input and every other
// output; throws PathError naming the first problem.
void check_outputs(const std::vector<OutputPath>& outputs, const std::vector<NamedPath>& inputs);

}  // namespace tbgrad::mnist
