// MPI (Open MPI) as a dist::Communicator. Built when TBGRAD_MPI is on (mpi_built()).
#pragma once

#include <memory>

#include "tbgrad/distributed/communicator.hpp"

namespace tbgrad::dist {

// Whether this library was built with MPI.
bool mpi_built();

// Whether this process was started by mpirun/mpiexec (Open MPI's, MPICH's or a PMIx launcher's
// environment variables are set), so MPI should be initialised.
bool launched_by_mpi();

// Processes of the job the launcher started (OMPI_COMM_WORLD_SIZE, PMI_SIZE; 1 if none).
int launched_size();

// Processes of this job on this host (OMPI_COMM_WORLD_LOCAL_SIZE and the like; 1 if unknown).
int local_size();

// MPI for the life of the object: MPI_Init_thread (MPI_THREAD_FUNNELED: only the thread that
// created it calls MPI; the library's worker threads never do) and MPI_Finalize. world() is
// MPI_COMM_WORLD. Throws dist::Error when built without MPI or when MPI fails to start.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  Communicator& world();
  // Ends every process of the job with `code` (MPI_Abort): for a failure on one rank that the
  // others cannot learn of, so that none waits for it forever.
  [[noreturn]] void abort(int code);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tbgrad::dist
