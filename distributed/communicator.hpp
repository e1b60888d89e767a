// The processes that train one model together (docs/distributed.md): a communicator moves
// bytes between them, and nn::Trainer uses it to combine what each process computed in the
// same fixed order as its threads do (Note [Ranks] in nn/train/exchange.hpp). MPI does the transport
// (distributed/mpi.hpp); a program not launched by mpirun has one process, single().
//
// This folder was named dist/; its old paths (<tbgrad/dist/...>) still work through the
// forwarding headers in include/tbgrad/dist/. The namespace stays tbgrad::dist, so code that
// names dist::Communicator compiles unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace tbgrad::dist {

// A collective operation failed, or the processes disagree (each rank throws the same one).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;  // this process, 0 to size() - 1
  virtual int size() const = 0;  // processes in all

  // Collective: every rank's block, in rank order, into `all` (counts[r] bytes from rank r).
  // This rank's block is already in place in `all`, at the sum of the counts before it.
  virtual void allgather_in_place(std::span<std::byte> all,
                                  std::span<const std::int64_t> counts) = 0;
  // Collective: `data` of rank `root` into every rank's `data` (the same size on all).
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
};

// The communicator of a process that trains alone: rank 0 of 1.
Communicator& single();

// Collective: every rank's string, in rank order.
std::vector<std::string> allgather_strings(Communicator& comm, const std::string& mine);

// Collective: throws dist::Error on every rank when `value` is not the same on all ranks,
// naming `what` and the first rank that differs from rank 0, with both values.
void check_same(Communicator& comm, const std::string& what, const std::string& value);

// Collective: whether `mine` is true on any rank.
bool any(Communicator& comm, bool mine);

// A 64-bit FNV-1a hash of bytes, for checking that ranks hold the same data or parameters.
std::uint64_t fingerprint(std::span<const std::byte> bytes, std::uint64_t seed = 0);

}  // namespace tbgrad::dist
