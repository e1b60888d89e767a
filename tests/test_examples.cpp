// The examples and the app against what the library writes: examples/custom_cnn.cpp trains a
// user's network for a few steps on synthetic MNIST-format files, and `tbgrad-mnist eval` and
// `predict` load a checkpoint the library wrote for one of the app's models.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <tbgrad.hpp>

#include "apps/mnist/synthetic.hpp"
#include "tests/run_command.hpp"

namespace tbgrad {
namespace {

namespace fs = std::filesystem;

using Result = testing::CommandResult;
Result run(const std::string& cmd) { return testing::run_command(cmd); }

class Examples : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("tbgrad_examples_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "data");
    mnist::write_dataset(dir_ / "data", mnist::make_synthetic(400, 1),
                         mnist::make_synthetic(100, 2));
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static inline fs::path dir_;
};

TEST_F(Examples, CustomCnnTrainsAFewStepsSavesAndReloads) {
  // 1 epoch of the first 96 images: three steps of 32, on two threads.
  const Result r = run("cd " + dir_.string() + " && " + TBGRAD_EXAMPLE_CUSTOM_CNN + " " +
                       (dir_ / "data").string() + " 1 96 2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("epoch 1: train loss"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("reloaded checkpoint: test accuracy"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir_ / "custom_cnn.ckpt"));
}

TEST_F(Examples, ResnetTrainsAFewStepsSavesAndReloadsWithTheSameAccuracy) {
  // 1 epoch of the first 64 images: two steps of 32 (warmup, augmentation, dropout, batch
  // norm), on two threads; the reloaded checkpoint (buffers included) evaluates the same.
  const Result r = run("cd " + dir_.string() + " && " + TBGRAD_EXAMPLE_RESNET + " " +
                       (dir_ / "data").string() + " 1 64 2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("epoch 1: train loss"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("reloaded checkpoint: test accuracy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(the same)"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir_ / "resnet.ckpt"));
}

TEST_F(Examples, TheAppEvaluatesACheckpointTheLibraryWroteForOneOfItsModels) {
  const data::Dataset train = data::load_split(dir_ / "data", data::Split::kTrain);
  const nn::ModelFn model = nn::model_fn("seed");
  nn::ParamStore store;
  nn::create_parameters(model, store);
  nn::Rng rng(1);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer trainer(model, store, sgd, {.batch_size = 32});
  data::Batcher batches(train, 32);
  nn::train_epoch(trainer, batches, rng);
  const fs::path file = dir_ / "library.ckpt";
  nn::save_parameters(file, store, &sgd, {{"model", "seed"}});  // no epoch, lr, seed, ...

  const Result eval = run(std::string(TBGRAD_MNIST_BIN) + " eval --load " + file.string() +
                          " --data " + (dir_ / "data").string());
  EXPECT_EQ(eval.code, 0) << eval.out;
  EXPECT_NE(eval.out.find("accuracy"), std::string::npos) << eval.out;
}

}  // namespace
}  // namespace tbgrad
