// tbgrad-mnist as a user runs it: exit codes, messages, outputs and files.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "apps/mnist/synthetic.hpp"
#include "tests/run_command.hpp"

namespace tbgrad::mnist {
namespace {

namespace fs = std::filesystem;

using Result = testing::CommandResult;

// Runs tbgrad-mnist with `args`, after environment assignments `env` ("VAR=value ...").
Result run_env(const std::string& env, const std::string& args) {
  return testing::run_command(env + " " + std::string(TBGRAD_MNIST_BIN) + " " + args);
}

Result run(const std::string& args) { return run_env("", args); }

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("tbgrad_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "data");
    write_dataset(dir_ / "data", make_synthetic(2000, 1), make_synthetic(300, 2), /*gzip=*/true);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string data() { return "--data " + (dir_ / "data").string(); }
  static std::string path(const char* name) { return (dir_ / name).string(); }
  static inline fs::path dir_;
};

TEST_F(Cli, NoArgumentsPrintsUsageAndExits2) {
  Result r = run("");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("usage: tbgrad-mnist"), std::string::npos) << r.out;
}

TEST_F(Cli, HelpOnTheProgramAndEachCommandExits0) {
  EXPECT_EQ(run("--help").code, 0);
  for (const char* cmd : {"train", "eval", "predict", "inspect"}) {
    Result r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_NE(r.out.find(std::string("usage: tbgrad-mnist ") + cmd), std::string::npos) << r.out;
  }
  EXPECT_NE(run("train --help").out.find("--batch-size"), std::string::npos);
}

TEST_F(Cli, BadFlagsAndValuesAreUsageErrorsNamingTheFlag) {
  const std::pair<const char*, const char*> cases[] = {
      {"train --batch-size 0", "--batch-size"},  {"train --batch-size -3", "--batch-size"},
      {"train --epochs -1", "--epochs"},         {"train --epochs many", "--epochs"},
      {"train --model nope", "--model"},         {"train --lr nan", "--lr"},
      {"train --lr -0.1", "--lr"},               {"train --lr 0", "--lr"},
      {"train --lr abc", "--lr"},                {"train --threads 0", "--threads"},
      {"train --limit -5", "--limit"},           {"train --seed 1.5", "--seed"},
      {"train --optimizer rmsprop", "--optimizer"}, {"train --init zeros", "--init"},
      {"train --schedule linear", "--schedule"},
      {"train --frobnicate", "frobnicate"},      {"train --batch-size 99999999999999999999", "--batch-size"},
      {"eval", "--load"},                        {"predict --load x.ckpt", "IMAGE"},
      {"inspect --out x.json", "--load"},        {"inspect --load x.ckpt", "--out"},
      {"inspect --load x.ckpt --out x.json --index -1", "--index"},
      {"fly", "unknown command"},
  };
  for (const auto& [args, needle] : cases) {
    Result r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  }
}

// --summary prints the model's table and exits before reading any data. LeNet-5's parameters,
// by hand: conv1 6*1*5*5+6, conv2 16*6*5*5+16, fc1 400*120+120, fc2 120*84+84, fc3 84*10+10.
TEST_F(Cli, SummaryPrintsTheModelsTableWithoutData) {
  Result r = run("train --model lenet5 --batch-size 4 --summary --data " + path("nowhere"));
  ASSERT_EQ(r.code, 0) << r.out;
  const int params = 6 * 25 + 6 + 16 * 6 * 25 + 16 + 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10;
  ASSERT_EQ(params, 61706);
  EXPECT_NE(r.out.find("Total params: 61,706"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[4,6,28,28]"), std::string::npos) << r.out;
  EXPECT_NE(run("train --help").out.find("--summary"), std::string::npos);
}

TEST_F(Cli, MissingDataIsAClearErrorWithExitCode1) {
  Result r = run("train --data " + path("nowhere"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("not found"), std::string::npos) << r.out;
}

TEST_F(Cli, TrainEvalAndPredictWorkEndToEnd) {
  Result t = run("train " + data() + " --epochs 2 --threads 2 --json --save " + path("m.ckpt") +
                 " --metrics " + path("m.csv"));
  ASSERT_EQ(t.code, 0) << t.out;
  // One line per epoch, then the JSON summary as the last line.
  EXPECT_NE(t.out.find("\n    1 "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("\n    2 "), std::string::npos) << t.out;
  std::string last = t.out.substr(t.out.rfind('\n', t.out.size() - 2) + 1);
  nlohmann::json j = nlohmann::json::parse(last);
  for (const char* key : {"model", "epochs", "batch_size", "threads", "train_seconds",
                          "images_per_second", "test_accuracy", "test_loss"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["model"], "seed");
  EXPECT_EQ(j["threads"], 2);
  EXPECT_EQ(j["batch_size"], 32);
  // --step-log: a header and one row per step (320 images / 32 = 10 steps).
  {
    Result sl = run("train " + data() + " --epochs 1 --limit 320 --step-log " + path("s.csv"));
    ASSERT_EQ(sl.code, 0) << sl.out;
    std::ifstream steps(path("s.csv"));
    std::string l;
    std::getline(steps, l);
    EXPECT_EQ(l, "epoch,step,loss,lr,grad_norm,update_norm");
    int n = 0;
    while (std::getline(steps, l)) ++n;
    EXPECT_EQ(n, 10);
    Result nodir = run("train " + data() + " --epochs 1 --limit 64 --step-log " + path("no/s.csv"));
    EXPECT_EQ(nodir.code, 1) << nodir.out;
    EXPECT_NE(nodir.out.find("no/s.csv"), std::string::npos) << nodir.out;
  }
  EXPECT_GT(j["test_accuracy"].get<double>(), 0.9);

  std::ifstream csv(path("m.csv"));
  std::string line;
  int rows = 0;
  std::getline(csv, line);
  EXPECT_EQ(line.rfind("epoch,train_loss,train_accuracy,test_loss,test_accuracy", 0), 0u) << line;
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, 2);

  Result e = run("eval --load " + path("m.ckpt") + " " + data() + " --json");
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_NE(e.out.find("confusion matrix"), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("per-class accuracy"), std::string::npos) << e.out;
  nlohmann::json je = nlohmann::json::parse(e.out.substr(e.out.rfind('\n', e.out.size() - 2) + 1));
  EXPECT_DOUBLE_EQ(je["test_accuracy"].get<double>(), j["test_accuracy"].get<double>());

  // Test images as PGM files: predict names a class for each, nearly always the right one.
  Dataset test = make_synthetic(10, 3);
  std::string files;
  for (int i = 0; i < 10; ++i) {
    const std::string name = path(("digit" + std::to_string(i) + ".pgm").c_str());
    std::ofstream pgm(name, std::ios::binary);
    pgm << "P5\n28 28\n255\n";
    pgm.write(reinterpret_cast<const char*>(test.images.data() + static_cast<std::ptrdiff_t>(i) * 784), 784);
    files += " " + name;
  }
  Result p = run("predict --load " + path("m.ckpt") + files);
  ASSERT_EQ(p.code, 0) << p.out;
  int right = 0;
  for (int i = 0; i < 10; ++i) {
    const std::string expect = "digit" + std::to_string(i) + ".pgm: " +
                               std::to_string(test.labels[static_cast<std::size_t>(i)]) + " (p=";
    right += p.out.find(expect) != std::string::npos;
  }
  EXPECT_GE(right, 8) << p.out;

  Result bad = run("predict --load " + path("m.ckpt") + " " + path("m.csv"));
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("m.csv"), std::string::npos) << bad.out;

  // inspect writes the layers of one test image as JSON, and refuses an index past the end.
  Result in = run("inspect --load " + path("m.ckpt") + " " + data() + " --index 5 --out " +
                  path("i.json"));
  ASSERT_EQ(in.code, 0) << in.out;
  std::ifstream ij(path("i.json"));
  nlohmann::json ji = nlohmann::json::parse(ij);
  EXPECT_EQ(ji["model"], "seed");
  EXPECT_EQ(ji["index"], 5);
  EXPECT_EQ(ji["layers"].size(), 11u);
  EXPECT_EQ(ji["layers"][2]["name"], "pool1");
  EXPECT_EQ(ji["layers"][2]["data"].size(), 3u * 11 * 11);
  EXPECT_EQ(ji["kernels"][0]["shape"], nlohmann::json({3, 1, 5, 5}));
  EXPECT_EQ(ji["image"]["data"].size(), 784u);
  Result past = run("inspect --load " + path("m.ckpt") + " " + data() + " --index 300 --out " +
                    path("j.json"));
  EXPECT_EQ(past.code, 2) << past.out;
  EXPECT_NE(past.out.find("--index"), std::string::npos) << past.out;
  EXPECT_FALSE(fs::exists(path("j.json")));
}

std::string file_bytes(const std::string& name) {
  std::ifstream f(name, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST_F(Cli, ResnetTrainsReloadsInEvaluationModeAndIsTheSameForOneAndTwoThreads) {
  // One epoch of 96 images (three steps) with the recipe's flags: batch norm, dropout, weight
  // decay, warmup per step, augmentation.
  const std::string recipe = "train --model resnet " + data() +
                             " --epochs 1 --limit 96 --weight-decay 5e-4 --warmup-epochs 1 "
                             "--augment --json --save ";
  Result t1 = run(recipe + path("r1.ckpt") + " --threads 1");
  ASSERT_EQ(t1.code, 0) << t1.out;
  Result t2 = run(recipe + path("r2.ckpt") + " --threads 2");
  ASSERT_EQ(t2.code, 0) << t2.out;
  nlohmann::json j = nlohmann::json::parse(t1.out.substr(t1.out.rfind('\n', t1.out.size() - 2) + 1));
  EXPECT_EQ(j["model"], "resnet");
  EXPECT_TRUE(std::isfinite(j["test_loss"].get<double>())) << t1.out;
  // Defaults for resnet: momentum 0.05, He init.
  EXPECT_EQ(j["optimizer"], "momentum");
  EXPECT_DOUBLE_EQ(j["lr"].get<double>(), 0.05);
  const std::string a = file_bytes(path("r1.ckpt")), b = file_bytes(path("r2.ckpt"));
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "checkpoints of 1 and 2 threads differ";
  EXPECT_NE(a.find("running_mean"), std::string::npos);  // the buffers are saved
  // Reloaded, the model evaluates as the trainer's evaluator did (evaluation mode), twice.
  for (int i = 0; i < 2; ++i) {
    Result e = run("eval --load " + path("r1.ckpt") + " " + data() + " --json");
    ASSERT_EQ(e.code, 0) << e.out;
    nlohmann::json je =
        nlohmann::json::parse(e.out.substr(e.out.rfind('\n', e.out.size() - 2) + 1));
    EXPECT_DOUBLE_EQ(je["test_accuracy"].get<double>(), j["test_accuracy"].get<double>());
    EXPECT_DOUBLE_EQ(je["test_loss"].get<double>(), j["test_loss"].get<double>());
  }
  // inspect runs one image (batch 1: evaluation mode, where batch norm needs no batch).
  Result in = run("inspect --load " + path("r1.ckpt") + " " + data() + " --index 3 --out " +
                  path("ri.json"));
  ASSERT_EQ(in.code, 0) << in.out;
  // predict runs the same image twice to the same probabilities: evaluation mode (training
  // mode would update the running statistics and draw dropout masks).
  {
    Dataset test = make_synthetic(1, 3);
    const std::string name = path("resnet_digit.pgm");
    std::ofstream pgm(name, std::ios::binary);
    pgm << "P5\n28 28\n255\n";
    pgm.write(reinterpret_cast<const char*>(test.images.data()), 784);
    pgm.close();
    Result p = run("predict --load " + path("r1.ckpt") + " " + name + " " + name);
    ASSERT_EQ(p.code, 0) << p.out;
    std::istringstream lines(p.out);
    std::string first, second;
    std::getline(lines, first);
    std::getline(lines, second);
    EXPECT_FALSE(first.empty());
    EXPECT_EQ(first, second) << p.out;
  }
  // Resumed after its first epoch, the run ends with the bytes of the straight two-epoch run
  // (the schedule's step count, the running statistics and dropout's step key restored).
  {
    const std::string two = "train --model resnet " + data() +
                            " --limit 96 --weight-decay 5e-4 --augment --warmup-epochs ";
    ASSERT_EQ(run(two + "1 --save " + path("s2.ckpt") + " --epochs 2").code, 0);
    ASSERT_EQ(run(two + "1 --save " + path("h2.ckpt") + " --epochs 1").code, 0);
    Result rr = run(two + "1 --save " + path("h2.ckpt") + " --epochs 2 --resume " + path("h2.ckpt"));
    ASSERT_EQ(rr.code, 0) << rr.out;
    EXPECT_TRUE(file_bytes(path("s2.ckpt")) == file_bytes(path("h2.ckpt")))
        << "a resumed resnet run differs from the straight one";
    Result other = run(two + "2 --save " + path("h3.ckpt") + " --epochs 2 --resume " +
                       path("h2.ckpt"));
    EXPECT_EQ(other.code, 1) << other.out;
    EXPECT_NE(other.out.find("--warmup-epochs"), std::string::npos) << other.out;
  }
  // Bad values of the new flags are usage errors naming them.
  for (const auto& [args, needle] :
       {std::pair<std::string, const char*>{"train --weight-decay -1", "--weight-decay"},
        {"train --weight-decay abc", "--weight-decay"},
        {"train --epochs 2 --warmup-epochs 3", "--warmup-epochs"},
        {"train --warmup-epochs 1 --schedule step", "--warmup-epochs"},
        {"train --model resnet --schedule onecycle", "--schedule"}}) {
    Result r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  }
}

TEST_F(Cli, ACorruptCheckpointIsRefusedWithExitCode1) {
  {
    std::ofstream f(path("junk.ckpt"), std::ios::binary);
    f << "this is not a checkpoint";
  }
  Result r = run("eval --load " + path("junk.ckpt") + " " + data());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("junk.ckpt"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace tbgrad::mnist

namespace tbgrad::mnist {
namespace {

// TBGRAD_MAX_ISA (graph/isa.hpp): the target in use is on train's first line and in --json; a
// bad value is a command-line error naming the variable and the accepted values.
TEST_F(Cli, TheSimdTargetIsPrintedAndTbgradMaxIsaCapsIt) {
  Result best = run("train " + data() + " --epochs 1 --limit 64 --json");
  ASSERT_EQ(best.code, 0) << best.out;
  const std::string first = best.out.substr(0, best.out.find('\n'));
  EXPECT_NE(first.find(", SIMD "), std::string::npos) << first;
  nlohmann::json j = nlohmann::json::parse(best.out.substr(best.out.rfind('\n', best.out.size() - 2) + 1));
  ASSERT_TRUE(j.contains("isa"));
  EXPECT_NE(first.find("SIMD " + j["isa"].get<std::string>()), std::string::npos) << first;

  Result capped = run_env("TBGRAD_MAX_ISA=scalar", "train " + data() + " --epochs 1 --limit 64 --json");
  ASSERT_EQ(capped.code, 0) << capped.out;
  EXPECT_NE(capped.out.find("SIMD scalar"), std::string::npos) << capped.out;
  EXPECT_NE(capped.out.find("\"isa\":\"scalar\""), std::string::npos) << capped.out;

  Result bad = run_env("TBGRAD_MAX_ISA=avx9", "train " + data() + " --epochs 1 --limit 64");
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_NE(bad.out.find("TBGRAD_MAX_ISA: unknown SIMD target 'avx9'"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("scalar"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace tbgrad::mnist
