#include "distributed/communicator.hpp"

#include <cstring>
#include <numeric>

namespace tbgrad::dist {
namespace {

class Single final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allgather_in_place(std::span<std::byte>, std::span<const std::int64_t> counts) override {
    if (counts.size() != 1) throw Error("allgather: one count per rank expected");
  }
  void broadcast(std::span<std::byte>, int root) override {
    if (root != 0) throw Error("broadcast: no rank " + std::to_string(root) + " of 1");
  }
};

}  // namespace

Communicator& single() {
  static Single comm;
  return comm;
}

std::vector<std::string> allgather_strings(Communicator& comm, const std::string& mine) {
  const auto n = static_cast<std::size_t>(comm.size());
  const auto rank = static_cast<std::size_t>(comm.rank());
  // The lengths first (8 bytes from each rank), then the strings.
  std::vector<std::int64_t> lengths(n);
  lengths[rank] = static_cast<std::int64_t>(mine.size());
  std::vector<std::int64_t> eight(n, sizeof(std::int64_t));
  comm.allgather_in_place(std::as_writable_bytes(std::span(lengths)), eight);
  std::vector<std::int64_t> offsets(n + 1, 0);
  for (std::size_t r = 0; r < n; ++r) {
    if (lengths[r] < 0) throw Error("allgather: rank " + std::to_string(r) + " sent a bad length");
    offsets[r + 1] = offsets[r] + lengths[r];
  }
  std::vector<std::byte> all(static_cast<std::size_t>(offsets[n]));
  std::memcpy(all.data() + offsets[rank], mine.data(), mine.size());
  comm.allgather_in_place(all, lengths);
  std::vector<std::string> out(n);
  for (std::size_t r = 0; r < n; ++r) {
    out[r].assign(reinterpret_cast<const char*>(all.data()) + offsets[r],
                  static_cast<std::size_t>(lengths[r]));
  }
  return out;
}

void check_same(Communicator& comm, const std::string& what, const std::string& value) {
  if (comm.size() == 1) return;
  const std::vector<std::string> all = allgather_strings(comm, value);
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r] != all[0]) {
      throw Error("the processes disagree on " + what + ": rank " + std::to_string(r) +
                  " has " + all[r] + ", rank 0 has " + all[0]);
    }
  }
}

bool any(Communicator& comm, bool mine) {
  if (comm.size() == 1) return mine;
  std::vector<std::byte> flags(static_cast<std::size_t>(comm.size()));
  flags[static_cast<std::size_t>(comm.rank())] = std::byte{mine};
  const std::vector<std::int64_t> ones(flags.size(), 1);
  comm.allgather_in_place(flags, ones);
  for (std::byte f : flags) {
    if (f != std::byte{0}) return true;
  }
  return false;
}

std::uint64_t fingerprint(std::span<const std::byte> bytes, std::uint64_t seed) {
  std::uint64_t h = 14695981039346656037ull ^ seed;
  for (std::byte b : bytes) {
    h ^= static_cast<std::uint64_t>(b);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace tbgrad::dist
