#include "distributed/mpi.hpp"

#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#ifdef TBGRAD_HAVE_MPI
#include <mpi.h>
#endif

namespace tbgrad::dist {

namespace {
int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return *end == '\0' && n > 0 && n < std::numeric_limits<int>::max() ? static_cast<int>(n) : 0;
}
}  // namespace

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"}) {
    if (std::getenv(v)) return true;
  }
  return false;
}

int launched_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    if (const int n = env_int(v)) return n;
  }
  return 1;
}

int local_size() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MPI_LOCAL_NRANKS"}) {
    if (const int n = env_int(v)) return n;
  }
  return 1;
}

#ifdef TBGRAD_HAVE_MPI

bool mpi_built() { return true; }

namespace {

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(len));
}

void check(int code, const char* what) {
  if (code != MPI_SUCCESS) throw Error(std::string(what) + " failed: " + mpi_error(code));
}

class World final : public Communicator {
 public:
  World() {
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allgather_in_place(std::span<std::byte> all,
                          std::span<const std::int64_t> counts) override {
    if (counts.size() != static_cast<std::size_t>(size_)) {
      throw Error("allgather: one count per rank expected");
    }
    counts_.resize(counts.size());
    displs_.resize(counts.size());
    std::int64_t offset = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      if (counts[r] < 0 || offset > std::numeric_limits<int>::max() ||
          counts[r] > std::numeric_limits<int>::max()) {
        throw Error("allgather: blocks over 2 GiB");
      }
      counts_[r] = static_cast<int>(counts[r]);
      displs_[r] = static_cast<int>(offset);
      offset += counts[r];
    }
    if (offset != static_cast<std::int64_t>(all.size())) {
      throw Error("allgather: the blocks' sizes do not add up to the buffer's");
    }
    check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all.data(), counts_.data(),
                         displs_.data(), MPI_BYTE, MPI_COMM_WORLD),
          "MPI_Allgatherv");
  }

  void broadcast(std::span<std::byte> data, int root) override {
    if (data.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
      throw Error("broadcast: over 2 GiB");
    }
    check(MPI_Bcast(data.data(), static_cast<int>(data.size()), MPI_BYTE, root, MPI_COMM_WORLD),
          "MPI_Bcast");
  }

 private:
  int rank_ = 0, size_ = 1;
  std::vector<int> counts_, displs_;  // kept: a step's allgather allocates nothing
};

}  // namespace

struct MpiSession::Impl {
  std::unique_ptr<World> world;
};

MpiSession::MpiSession(int* argc, char*** argv) : impl_(std::make_unique<Impl>()) {
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  // Errors come back as codes (thrown as dist::Error) instead of ending the process unexplained.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  if (provided < MPI_THREAD_FUNNELED) {
    MPI_Finalize();
    throw Error("MPI does not support MPI_THREAD_FUNNELED");
  }
  impl_->world = std::make_unique<World>();
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

Communicator& MpiSession::world() { return *impl_->world; }

void MpiSession::abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

#else  // built without MPI

bool mpi_built() { return false; }

struct MpiSession::Impl {};

MpiSession::MpiSession(int*, char***) {
  throw Error("this build of tbgrad has no MPI (configure with -DTBGRAD_MPI=ON and install "
              "Open MPI: scripts/install_deps.sh --with-mpi)");
}
MpiSession::~MpiSession() = default;
Communicator& MpiSession::world() { return single(); }
void MpiSession::abort(int code) { std::_Exit(code); }

#endif

}  // namespace tbgrad::dist
