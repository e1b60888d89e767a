#include "apps/mnist/paths.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <random>

#include "apps/mnist/idx.hpp"

namespace tbgrad::mnist {
namespace {

namespace fs = std::filesystem;

// What a path names: an existing file by device and inode; a file that does not exist yet by
// its directory's device and inode and its name (two such paths name the same future file).
struct FileId {
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  std::string name;  // only when !exists
  bool operator==(const FileId& o) const {
    return exists == o.exists && dev == o.dev && ino == o.ino && name == o.name;
  }
};

fs::path directory_of(const fs::path& p) {
  fs::path d = p.parent_path();
  return d.empty() ? fs::path(".") : d;
}

std::optional<FileId> file_id(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) == 0) return FileId{true, st.st_dev, st.st_ino, {}};
  if (errno != ENOENT) return std::nullopt;
  if (::stat(directory_of(p).c_str(), &st) != 0) return std::nullopt;
  return FileId{false, st.st_dev, st.st_ino, p.filename().string()};
}

std::string describe(const std::string& flag, const fs::path& p) {
  return flag + " " + p.string();
}

[[noreturn]] void fail(const std::string& flag, const fs::path& p, const std::string& problem,
                       bool usage = false) {
  throw PathError(describe(flag, p) + ": " + problem, usage);
}

// Whether this process can create a file in `dir`: tries it, with an unnamed O_TMPFILE file
// (never visible, nothing to clean up), or, where the file system has no O_TMPFILE, a hidden
// named file removed at once. Returns 0 or the errno of the failure.
int can_create_in(const fs::path& dir) {
  int fd = -1;
#ifdef O_TMPFILE
  fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
    return 0;
  }
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) return errno;
#endif
  std::random_device entropy;
  const fs::path probe =
      dir / (".tbgrad-write-probe." + std::to_string(::getpid()) + "." + std::to_string(entropy()));
  fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  ::close(fd);
  ::unlink(probe.c_str());
  return 0;
}

void check_one(const OutputPath& out) {
  struct stat st {};
  if (::stat(out.path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail(out.flag, out.path, "is a directory");
    if (!S_ISREG(st.st_mode)) {
      fail(out.flag, out.path,
           std::string("is a ") +
               (S_ISFIFO(st.st_mode)   ? "FIFO"
                : S_ISCHR(st.st_mode)  ? "character device"
                : S_ISBLK(st.st_mode)  ? "block device"
                : S_ISSOCK(st.st_mode) ? "socket"
                                       : "special file") +
               ", not a regular file; refusing to replace it");
    }
    if (out.mode == WriteMode::kTruncate && ::access(out.path.c_str(), W_OK) != 0) {
      fail(out.flag, out.path, std::strerror(errno));
    }
  } else if (errno != ENOENT) {
    fail(out.flag, out.path, std::strerror(errno));
  }
  const fs::path dir = directory_of(out.path);
  if (::stat(dir.c_str(), &st) != 0) {
    fail(out.flag, out.path, "cannot use directory " + dir.string() + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) fail(out.flag, out.path, dir.string() + " is not a directory");
  if (const int e = can_create_in(dir); e != 0) {
    fail(out.flag, out.path, "cannot create files in " + dir.string() + ": " + std::strerror(e));
  }
}

}  // namespace

void require_non_empty(const std::string& flag, const std::string& value) {
  if (value.empty()) throw PathError(flag + ": the path is empty", true);
}

std::vector<NamedPath> data_files(const fs::path& dir, bool train) {
  std::vector<NamedPath> files;
  std::vector<Split> splits = {Split::kTest};
  if (train) splits.insert(splits.begin(), Split::kTrain);
  for (Split s : splits) {
    for (std::string_view name : {images_file_name(s), labels_file_name(s)}) {
      const fs::path raw = dir / std::string(name);
      files.push_back({"--data", raw});
      files.push_back({"--data", fs::path(raw.string() + ".gz")});
    }
  }
  return files;
}

void check_outputs(const std::vector<OutputPath>& outputs, const std::vector<NamedPath>& inputs) {
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const OutputPath& out = outputs[i];
    require_non_empty(out.flag, out.path.string());
    check_one(out);
    const std::optional<FileId> id = file_id(out.path);
    if (!id) continue;  // check_one found the directory usable; nothing names it otherwise
    for (const NamedPath& in : inputs) {
      if (in.flag == out.may_replace) continue;
      const std::optional<FileId> in_id = file_id(in.path);
      if (in_id && *in_id == *id) {
        fail(out.flag, out.path,
             "is the same file as the input " + describe(in.flag, in.path) +
                 "; refusing to overwrite it",
             true);
      }
    }
    for (std::size_t j = 0; j < i; ++j) {
      const std::optional<FileId> other = file_id(outputs[j].path);
      if (other && *other == *id) {
        fail(out.flag, out.path,
             "is the same file as " + describe(outputs[j].flag, outputs[j].path), true);
      }
    }
  }
}

}  // namespace tbgrad::mnist
