// The collectives a data-parallel step could combine ranks' work with, at the seed model's
// sizes (docs/design.md "Processes"): the allgather tbgrad uses (each rank's block in place:
// 76.3 KB per step at batch 32, 229 KB at batch 256) against an allreduce of the model's
// 31,750 float gradients (127 KB), which is what most frameworks do but whose summation order
// MPI chooses. Prints the median of 15 rounds of 200 calls each, in microseconds per call.
//
// Usage: mpirun -np R bench/mpi_collectives
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

template <typename Fn>
double median_us(Fn fn) {
  for (int i = 0; i < 50; ++i) fn();
  std::vector<double> rounds;
  for (int r = 0; r < 15; ++r) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t = MPI_Wtime();
    for (int i = 0; i < 200; ++i) fn();
    rounds.push_back(1e6 * (MPI_Wtime() - t) / 200);
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds[rounds.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (rank == 0) std::printf("%d ranks; microseconds per call, median of 15 rounds\n", size);
  for (const int bytes : {78131, 234496}) {
    std::vector<char> buf(static_cast<std::size_t>(bytes));
    std::vector<int> counts(static_cast<std::size_t>(size)), displs(counts.size());
    for (int q = 0; q < size; ++q) {
      displs[static_cast<std::size_t>(q)] = static_cast<int>(std::int64_t{bytes} * q / size);
      counts[static_cast<std::size_t>(q)] =
          static_cast<int>(std::int64_t{bytes} * (q + 1) / size) - displs[static_cast<std::size_t>(q)];
    }
    const double us = median_us([&] {
      MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf.data(), counts.data(),
                     displs.data(), MPI_BYTE, MPI_COMM_WORLD);
    });
    if (rank == 0) std::printf("  allgatherv in place, %7d bytes: %8.1f\n", bytes, us);
  }
  constexpr int kGradients = 31750;
  std::vector<float> g(kGradients, 1.0f), sum(kGradients);
  const double us = median_us([&] {
    MPI_Allreduce(g.data(), sum.data(), kGradients, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  });
  if (rank == 0) std::printf("  allreduce (sum) of %d floats:   %8.1f\n", kGradients, us);
  MPI_Finalize();
  return 0;
}
