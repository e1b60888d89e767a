// Training over MPI processes (docs/distributed.md): mpirun -np R tbgrad-mnist train gives the
// bytes of one process without MPI, for any R and thread count; resume across R; ranks that
// disagree, cannot read their data or are killed end the whole job with a clear message.
// Skipped, with the reason, when this build has no MPI or mpirun is missing.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <tbgrad.hpp>

#include "apps/mnist/synthetic.hpp"
#include "tests/run_command.hpp"

namespace tbgrad::mnist {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::run_command;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class Mpi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("tbgrad_mpi_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "data");
    // 300 training images at batch 32: nine full batches and one of 12 (two micro-batches of
    // 8 and 4, so with 3 or 4 ranks some ranks have none).
    write_dataset(dir_ / "data", make_synthetic(300, 1), make_synthetic(200, 2), /*gzip=*/false);
    // mpirun refuses root unless told it is meant (CI runs as root).
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    ::setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  void SetUp() override {
    if (!dist::mpi_built()) GTEST_SKIP() << "this build has no MPI (-DTBGRAD_MPI=OFF)";
    if (run_command("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun is not installed";
  }

  static std::string bin() { return TBGRAD_MNIST_BIN; }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }
  static std::string train_args(const std::string& extra) {
    return " train --data " + path("data") + " --epochs 2 " + extra;
  }
  // Trains on one process without MPI.
  static CommandResult alone(const std::string& extra) {
    return run_command(bin() + train_args(extra));
  }
  static CommandResult ranks(int np, const std::string& extra) {
    return run_command("mpirun -np " + std::to_string(np) + " " + bin() + train_args(extra));
  }
  static inline fs::path dir_;
};

TEST_F(Mpi, CheckpointsAreByteIdenticalForAnyRanksAndThreads) {
  for (const char* model : {"seed", "lenet5"}) {
    for (const char* opt : {"adam", "sgd"}) {
      const std::string base = std::string("--model ") + model + " --optimizer " + opt;
      const std::string want = path(std::string("alone_") + model + opt);
      CommandResult r = alone(base + " --threads 1 --save " + want);
      ASSERT_EQ(r.code, 0) << r.out;
      for (int np = 1; np <= 4; ++np) {
        for (int threads = 1; threads <= 2; ++threads) {
          const std::string got = path("ranks");
          fs::remove(got);
          r = ranks(np, base + " --threads " + std::to_string(threads) + " --save " + got);
          ASSERT_EQ(r.code, 0) << np << " ranks: " << r.out;
          EXPECT_TRUE(slurp(got) == slurp(want))
              << "checkpoints differ: " << model << " " << opt << ", " << np << " ranks x " << threads << " threads";
          if (np > 1) {
            // Only rank 0 prints: one first line, naming the processes.
            const std::string first =
                "processes x " + std::to_string(threads) + " threads";
            EXPECT_NE(r.out.find(std::to_string(np) + " " + first), std::string::npos) << r.out;
            EXPECT_EQ(r.out.find("tbgrad-mnist: model"), r.out.rfind("tbgrad-mnist: model"))
                << r.out;
          }
        }
      }
    }
  }
}

TEST_F(Mpi, ResumesWithAnotherNumberOfRanks) {
  // One epoch on 2 ranks, resumed to the second on 3: the bytes of 2 epochs on one process
  // (--epochs is the total, so both runs have the same learning-rate schedule).
  const std::string want = path("resume_want"), got = path("resume_got");
  ASSERT_EQ(alone("--threads 1 --save " + want).code, 0);
  CommandResult r = run_command("mpirun -np 2 " + bin() + " train --data " + path("data") +
                                " --epochs 1 --save " + got);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(slurp(got) == slurp(want)) << "one epoch equals two";
  r = ranks(3, "--resume " + got + " --save " + got);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(slurp(got) == slurp(want)) << "the resumed checkpoint differs";
}

TEST_F(Mpi, RanksGivenDifferentArgumentsAllStopAtStart) {
  const std::string a = bin() + train_args("--seed 1"), b = bin() + train_args("--seed 2");
  const CommandResult r = run_command("mpirun -np 1 " + a + " : -np 1 " + b);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("started differently: rank 1 has"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--seed 2"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(" epoch "), std::string::npos) << "trained anyway: " << r.out;
}

TEST_F(Mpi, ARankThatCannotReadItsDataFailsEveryRank) {
  const std::string good = bin() + train_args("");
  const std::string bad = bin() + " train --data " + path("no_such_dir") + " --epochs 2";
  const CommandResult r = run_command("mpirun -np 2 " + good + " : -np 1 " + bad);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("[rank 2]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no_such_dir"), std::string::npos) << r.out;
}

TEST_F(Mpi, AKilledRankEndsTheJobAndTheCheckpointStaysUsable) {
  // Many epochs of a small set, saving each; rank 1 is killed once a checkpoint exists.
  const std::string ckpt = path("killed.st"), pids = path("pids");
  fs::remove(ckpt);
  const auto t0 = std::chrono::steady_clock::now();
  std::thread killer([&] {
    const auto deadline = t0 + std::chrono::seconds(60);
    while (!fs::exists(ckpt) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    // Rank 1's process: the tbgrad-mnist whose environment says rank 1.
    run_command("for p in $(pgrep -f 'tbgrad-mnist train --data " + path("data") +
                "'); do grep -qz '^OMPI_COMM_WORLD_RANK=1$' /proc/$p/environ 2>/dev/null && "
                "kill -9 $p; done");
  });
  const CommandResult r = run_command("mpirun -np 3 " + bin() + " train --data " + path("data") +
                                      " --epochs 100000 --save " + ckpt);
  killer.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_LT(seconds, 60) << r.out;
  EXPECT_NE(r.out.find("rank 1"), std::string::npos) << r.out;
  // The checkpoint is whole and resumes (with another rank count).
  const CommandResult e = run_command(bin() + " eval --data " + path("data") + " --load " + ckpt);
  EXPECT_EQ(e.code, 0) << e.out;
  const std::string key = "\"epochs\":";
  const CommandResult j =
      run_command(bin() + " eval --json --data " + path("data") + " --load " + ckpt);
  const std::size_t at = j.out.find(key);
  ASSERT_NE(at, std::string::npos) << j.out;
  const long epochs = std::strtol(j.out.c_str() + at + key.size(), nullptr, 10);
  EXPECT_GE(epochs, 1);
  const CommandResult again = run_command("mpirun -np 2 " + bin() + " train --data " +
                                          path("data") + " --epochs " +
                                          std::to_string(epochs + 1) + " --resume " + ckpt);
  EXPECT_EQ(again.code, 0) << again.out;
}

TEST_F(Mpi, EvalRunsOnRankZeroOnly) {
  const std::string ckpt = path("eval.st");
  ASSERT_EQ(alone("--save " + ckpt).code, 0);
  const CommandResult r =
      run_command("mpirun -np 3 " + bin() + " eval --data " + path("data") + " --load " + ckpt);
  EXPECT_EQ(r.code, 0) << r.out;
  const std::string line = "test accuracy";
  EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(line), r.out.rfind(line)) << "printed more than once: " << r.out;
}

}  // namespace
}  // namespace tbgrad::mnist
