// Ranks as threads of one process, for testing the trainer's and the evaluator's exchange
// between ranks (Note [Ranks] in nn/train/exchange.hpp) without MPI (and under the sanitizers, whose
// builds have no MPI).
#pragma once

#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <tbgrad.hpp>
#include <vector>

namespace tbgrad::testing {

// Each member of a group of `size` copies its block into a shared buffer, waits for the others,
// and copies the whole buffer out.
class ThreadRanks {
 public:
  explicit ThreadRanks(int size) : size_(size), sync_(size) {
    for (int r = 0; r < size; ++r) members_.push_back(std::make_unique<Member>(*this, r));
  }
  dist::Communicator& member(int r) { return *members_[static_cast<std::size_t>(r)]; }

 private:
  struct Member final : dist::Communicator {
    Member(ThreadRanks& g, int r) : group(g), me(r) {}
    int rank() const override { return me; }
    int size() const override { return group.size_; }
    void allgather_in_place(std::span<std::byte> all,
                            std::span<const std::int64_t> counts) override {
      std::int64_t at = 0;
      for (int q = 0; q < me; ++q) at += counts[static_cast<std::size_t>(q)];
      if (me == 0) group.shared_.assign(all.size(), std::byte{0});
      group.sync_.arrive_and_wait();
      std::memcpy(group.shared_.data() + at, all.data() + at,
                  static_cast<std::size_t>(counts[static_cast<std::size_t>(me)]));
      group.sync_.arrive_and_wait();
      std::memcpy(all.data(), group.shared_.data(), all.size());
      group.sync_.arrive_and_wait();
    }
    void broadcast(std::span<std::byte> data, int root) override {
      if (me == root) group.shared_.assign(data.begin(), data.end());
      group.sync_.arrive_and_wait();
      std::memcpy(data.data(), group.shared_.data(), data.size());
      group.sync_.arrive_and_wait();
    }
    ThreadRanks& group;
    int me;
  };
  int size_;
  std::barrier<> sync_;
  std::vector<std::byte> shared_;
  std::vector<std::unique_ptr<Member>> members_;
};

}  // namespace tbgrad::testing
