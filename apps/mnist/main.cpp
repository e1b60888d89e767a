// tbgrad-mnist: train, evaluate and use the MNIST CNNs from the command line.
#include <fcntl.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <csignal>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <span>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <tbgrad.hpp>
#include <vector>

#include "apps/mnist/idx.hpp"
#include "apps/mnist/image.hpp"
#include "apps/mnist/paths.hpp"
#include "apps/mnist/trainer.hpp"
#include "nn/checkpoint.hpp"

namespace po = boost::program_options;
using namespace tbgrad;
using namespace tbgrad::mnist;

namespace {

// Exit codes (also in --help).
constexpr int kExitOk = 0;
constexpr int kExitError = 1;     // bad data, checkpoint or image file; I/O failure
constexpr int kExitUsage = 2;     // bad command line
constexpr int kExitDiverged = 3;  // the loss became NaN or infinite

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Note [Ranks in the app]: under mpirun, 'train' trains one model on all ranks
// (docs/distributed.md). Only rank 0 prints and writes --save, --metrics and --step-log (the
// others' stdout goes to /dev/null). Failures that every rank meets together (a bad argument,
// unreadable data on any rank, arguments that differ between ranks, divergence, a stop signal)
// end every rank with the same exit code, rank 0 saying why; any other failure on one rank ends
// the whole job at once (MPI_Abort), so that no rank waits for it. 'eval', 'predict' and
// 'inspect' run on rank 0 only.
dist::Communicator* g_comm = &dist::single();

// A failure all ranks agreed on (Note [Ranks in the app]): exit with `code`; `message` (empty
// on the ranks that stay silent) is printed as it is.
struct CollectiveFailure : std::runtime_error {
  CollectiveFailure(int c, const std::string& message) : std::runtime_error(message), code(c) {}
  int code;
};

// Standard output could not be written (a full disk, /dev/full, a closed descriptor).
struct StdoutError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Flushes stdout and throws StdoutError if anything written to it so far was lost: what is
// printed is the command's result, so losing it is a failure (exit code 1), not a success.
void check_stdout() {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  if (!flushed || std::ferror(stdout) || !std::cout) {
    const int e = errno;
    throw StdoutError(std::string("cannot write to standard output: ") +
                      (e ? std::strerror(e) : "write error"));
  }
}

// Note [Interrupts]: the first SIGINT or SIGTERM asks training to stop at the start of the
// next step (a save in progress completes first), and main() then says where it stopped and
// what the checkpoint holds; a second signal ends the process at once (the checkpoint is still
// whole: saves are atomic).
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);
std::atomic<bool> g_quiet_rank{false};  // under mpirun, ranks other than 0 say nothing

extern "C" void on_stop_signal(int sig) {
  // One compare-exchange decides which signal is the first: two pending signals can be handled
  // by two threads at once (each handler blocks the other signal in its own thread only), and
  // a load then a store let both count as the first.
  int none = 0;
  if (!g_stop_signal.compare_exchange_strong(none, sig)) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);  // delivered when this handler returns
    return;
  }
  if (g_quiet_rank.load()) return;
  const char msg[] =
      "\ntbgrad-mnist: stopping at the end of the current step (send the signal again to stop "
      "at once)\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  // Each blocks the other while it runs, so two signals are handled one after the other.
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

const char* kProgramHelp =
    "tbgrad-mnist: train and use convolutional networks on MNIST with tbgrad.\n"
    "\n"
    "usage: tbgrad-mnist <command> [options]\n"
    "\n"
    "commands:\n"
    "  train     train a model (the report's reference CNN by default)\n"
    "  eval      evaluate a saved model on the test set\n"
    "  predict   classify image files (PNG or PGM) with a saved model\n"
    "  inspect   write a saved model's kernels and one test digit's feature maps as JSON\n"
    "\n"
    "Run 'tbgrad-mnist <command> --help' for a command's options.\n"
    "Exit codes: 0 success, 1 bad data/checkpoint/image or I/O failure, 2 bad command line,\n"
    "3 training diverged (non-finite loss).\n"
    "\n"
    "Under mpirun, 'train' trains one model over all the processes; the other commands run\n"
    "on rank 0 alone.\n"
    "\n"
    "Environment: TBGRAD_MAX_ISA caps the SIMD target the kernels use (avx512, avx2, sse4,\n"
    "scalar on x86-64; neon on AArch64); by default the best this CPU supports. 'train'\n"
    "prints the target in use on its first line.\n";

bool fs_equivalent(const std::filesystem::path& a, const std::filesystem::path& b) {
  std::error_code ignored;
  return std::filesystem::equivalent(a, b, ignored);
}

std::string default_data_dir() { return "data/mnist"; }

int hardware_threads() { return num_threads(); }

// Reads an integer option and checks its range, for clear messages ("--epochs must be ...").
std::int64_t int_option(const po::variables_map& vm, const char* name, std::int64_t lo,
                        std::int64_t hi) {
  const std::string& s = vm[name].as<std::string>();
  std::int64_t v = 0;
  std::size_t used = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != s.size()) {
    throw UsageError(std::string("--") + name + " expects an integer, got '" + s + "'");
  }
  if (v < lo || v > hi) {
    throw UsageError(std::string("--") + name + " must be between " + std::to_string(lo) +
                     " and " + std::to_string(hi) + ", got " + s);
  }
  return v;
}

double positive_double_option(const po::variables_map& vm, const char* name, double hi) {
  const std::string& s = vm[name].as<std::string>();
  double v = 0;
  std::size_t used = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != s.size()) {
    throw UsageError(std::string("--") + name + " expects a number, got '" + s + "'");
  }
  if (!std::isfinite(v) || v <= 0 || v > hi) {
    throw UsageError(std::string("--") + name + " must be a finite number in (0, " +
                     std::to_string(hi) + "], got " + s);
  }
  return v;
}

po::variables_map parse(const po::options_description& desc, const std::vector<std::string>& args,
                        const po::positional_options_description* positional = nullptr) {
  po::variables_map vm;
  po::command_line_parser parser(args);
  parser.options(desc);
  if (positional) parser.positional(*positional);
  const po::parsed_options parsed = parser.run();
  // Without a positional description, boost keeps stray words ("train junk") as nameless
  // options that store() then silently drops; refuse them instead.
  if (!positional) {
    for (const po::option& o : parsed.options) {
      if (o.position_key >= 0 || o.string_key.empty()) {
        throw UsageError("unexpected argument '" +
                         (o.original_tokens.empty() ? std::string() : o.original_tokens.front()) +
                         "'");
      }
    }
  }
  po::store(parsed, vm);
  po::notify(vm);
  return vm;
}

// --threads up to the library's bound. If the worker threads cannot all be started (a process
// limit), it runs with as many as could be, with a warning: the results do not depend on the
// thread count (Note [Determinism]).
void set_threads(const po::variables_map& vm) {
  // Under mpirun the ranks on one host share its cores.
  const int cores = std::max(1, hardware_threads() / (g_comm->size() > 1 ? dist::local_size() : 1));
  int threads = static_cast<int>(vm.count("threads") ? int_option(vm, "threads", 1, kMaxThreads)
                                                     : std::min(cores, kMaxThreads));
  for (int attempt = 0;; ++attempt) {
    try {
      set_num_threads(threads);
      return;
    } catch (const ThreadStartError& e) {
      if (attempt == 3) throw;
      std::fprintf(stderr, "tbgrad-mnist: warning: %s; using %d threads\n", e.what(),
                   e.available());
      threads = e.available();
    }
  }
}

// The string value of a path flag, refused when empty (an unset shell variable).
std::string path_option(const po::variables_map& vm, const char* name) {
  std::string v = vm[name].as<std::string>();
  require_non_empty(std::string("--") + name, v);
  return v;
}

// The SIMD target the kernels will use; a bad TBGRAD_MAX_ISA is a usage error (exit 2).
std::string simd_target() {
  try {
    return isa();
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

mnist::Dataset load(const std::string& dir, mnist::Split split, std::int64_t limit = 0) {
  mnist::Dataset d = mnist::load_split(dir, split);
  if (limit > 0 && limit < d.count) {
    d.count = limit;
    d.images.resize(static_cast<std::size_t>(limit) * 28 * 28);
    d.labels.resize(static_cast<std::size_t>(limit));
  }
  return d;
}

// What a failure means for the user: its exit code and the line to print (Note [Ranks in the
// app]: `collective` when every rank meets it together). Call inside a catch block.
struct Failure {
  int code;
  std::string message;
  bool collective;
};
Failure classify(const std::string& command) {
  const std::string see = " (see 'tbgrad-mnist " + command + " --help')";
  try {
    throw;
  } catch (const CollectiveFailure& e) {
    return {e.code, e.what(), true};
  } catch (const PathError& e) {
    if (!e.usage()) return {kExitError, std::string("tbgrad-mnist: ") + e.what(), false};
    return {kExitUsage, "tbgrad-mnist " + command + ": " + e.what() + see, false};
  } catch (const UsageError& e) {
    return {kExitUsage, "tbgrad-mnist " + command + ": " + e.what() + see, false};
  } catch (const po::error& e) {
    return {kExitUsage, "tbgrad-mnist " + command + ": " + e.what() + see, false};
  } catch (const mnist::DivergedError& e) {
    // The loss is the same on every rank: all diverge at the same step.
    return {kExitDiverged, std::string("tbgrad-mnist: training diverged: ") + e.what(), true};
  } catch (const dist::Error& e) {
    return {kExitError, std::string("tbgrad-mnist: ") + e.what(), true};
  } catch (const std::exception& e) {
    return {kExitError, std::string("tbgrad-mnist: ") + e.what(), false};
  }
}

// Under mpirun: every rank learns whether any failed before training and whether all were
// given the same arguments and data; if not, all throw the same CollectiveFailure (rank 0's
// carries the message). On one process, rethrows `failed`.
void agree_to_start(const std::exception_ptr& failed, const mnist::TrainConfig& cfg,
                    const mnist::Dataset& train_set, const mnist::Dataset& test_set,
                    const std::string& target) {
  if (g_comm->size() == 1) {
    if (failed) std::rethrow_exception(failed);
    return;
  }
  std::string mine;
  if (failed) {
    try {
      std::rethrow_exception(failed);
    } catch (...) {
      const Failure f = classify("train");
      mine = "F" + std::to_string(f.code) + " " + f.message;
    }
  } else {
    auto hash = [](const mnist::Dataset& d) {
      std::uint64_t h = dist::fingerprint(std::as_bytes(std::span(d.images)));
      return std::to_string(d.count) + " images, checksum " +
             std::to_string(dist::fingerprint(std::as_bytes(std::span(d.labels)), h));
    };
    // One field per line: a mismatch names the fields that differ.
    char lr[32];
    std::snprintf(lr, sizeof lr, "%.17g", cfg.lr);
    mine = "--model " + cfg.model + "\n--epochs " + std::to_string(cfg.epochs) +
           "\n--batch-size " + std::to_string(cfg.batch_size) + "\n--optimizer " +
           (cfg.optimizer.empty() ? "(default)" : cfg.optimizer) + "\n--lr " +
           (cfg.lr == 0 ? std::string("(default)") : std::string(lr)) + "\n--init " + cfg.init +
           "\n--schedule " + cfg.schedule + "\n--warmup-epochs " +
           std::to_string(cfg.warmup_epochs) + "\n--weight-decay " +
           (cfg.weight_decay ? std::to_string(*cfg.weight_decay) : std::string("(none)")) +
           "\n--augment " + (cfg.augment ? "on" : "off") + "\n--seed " + std::to_string(cfg.seed) +
           "\n--limit " + std::to_string(cfg.limit) + "\n--resume " +
           (cfg.resume.empty() ? "(none)" : "(a checkpoint)") + "\nSIMD target " + target +
           " (TBGRAD_MAX_ISA)\ntraining set " + hash(train_set) + "\ntest set " + hash(test_set);
  }
  const std::vector<std::string> all = dist::allgather_strings(*g_comm, mine);
  const bool speak = g_comm->rank() == 0;
  for (std::size_t r = 0; r < all.size(); ++r) {
    if (all[r].rfind('F', 0) != 0) continue;
    const std::size_t space = all[r].find(' ');
    const int code = std::stoi(all[r].substr(1, space - 1));
    const std::string message = all[r].substr(space + 1);
    throw CollectiveFailure(
        code, speak ? (r ? "[rank " + std::to_string(r) + "] " : std::string()) + message : "");
  }
  auto fields = [](const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  };
  const std::vector<std::string> zero = fields(all[0]);
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    const std::vector<std::string> theirs = fields(all[r]);
    std::string diff;
    for (std::size_t i = 0; i < std::max(zero.size(), theirs.size()); ++i) {
      const std::string a = i < zero.size() ? zero[i] : "", b = i < theirs.size() ? theirs[i] : "";
      if (a != b) diff += (diff.empty() ? "" : ", ") + b + " where rank 0 has " + a;
    }
    throw CollectiveFailure(kExitUsage, speak ? "tbgrad-mnist train: the processes were started "
                                                "differently: rank " +
                                                    std::to_string(r) + " has " + diff
                                              : "");
  }
}

int cmd_train(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tbgrad-mnist train [options]\n\n"
      "Trains a model on the MNIST training set, printing one line per epoch (train loss and\n"
      "accuracy, test accuracy, seconds, images/s), then the final test accuracy and time.\n"
      "Under 'mpirun -np R' the R processes train one model, each batch split between them,\n"
      "with the same result as one process; rank 0 prints and writes the files\n"
      "(docs/distributed.md). --threads then defaults to this host's cores / its ranks.\n\n"
      "options");
  // Numbers are read as strings and range-checked here, so '-1', 'nan' or 'abc' get a clear
  // usage error instead of wrapping around or being accepted.
  desc.add_options()("help,h", "show this help")(
      "data", po::value<std::string>()->default_value(default_data_dir()),
      "directory with the four MNIST idx files (raw or .gz)")(
      "model", po::value<std::string>()->default_value("seed"),
      "seed (the report's CNN), seed-nopool, lenet5 or resnet (a residual network with batch "
      "norm and dropout: scripts/pytorch_mnist.py's; its cosine schedule is stepped per step)")(
      "epochs", po::value<std::string>()->default_value("5"), "total epochs to train (>= 0)")(
      "batch-size", po::value<std::string>()->default_value("32"), "minibatch size (>= 1)")(
      "optimizer", po::value<std::string>(),
      "sgd, momentum, adam or adamw (default: momentum for seed-nopool and resnet, adam "
      "otherwise)")(
      "lr", po::value<std::string>(),
      "learning rate (default: sgd 0.1, momentum 0.05 for resnet and 0.02 for the others, adam "
      "and adamw 0.002 for seed and 0.001 for the others)")(
      "init", po::value<std::string>(),
      "weight initializer: xavier (uniform), he (normal), uniform (U(-1,1)) or normal (N(0,1)) "
      "(default: he for resnet, xavier otherwise)")(
      "weight-decay", po::value<std::string>(),
      "weight decay WD >= 0 of the weights (not biases or batch norm's scales and shifts): L2 "
      "added to the gradient for sgd, momentum and adam, decoupled for adamw (default: none; "
      "adamw 0.01 on every parameter)")(
      "warmup-epochs", po::value<std::string>()->default_value("0"),
      "linear warmup over the first W epochs, stepped every step (lr * (k + 1) / steps), then "
      "the schedule per step; needs --schedule cosine or constant")(
      "augment",
      "augment the training images: random crop with zero padding 2 and horizontal flip, "
      "seeded with --seed")(
      "schedule", po::value<std::string>()->default_value("cosine"),
      "learning rate over the run: cosine (decays from --lr towards 0 over the epochs), "
      "constant, step (x0.1 every third of the epochs), multistep (x0.1 at 1/2 and 3/4 of the "
      "epochs), onecycle (PyTorch's OneCycleLR peaking at --lr, stepped every step) or plateau "
      "(x0.1 when the epoch's training loss stops improving for 2 epochs, down to --lr/1000)")(
      "threads", po::value<std::string>(), "worker threads, 1 to 1024 (default: all cores)")(
      "seed", po::value<std::string>()->default_value("1"),
      "random seed for initialisation and data order")(
      "limit", po::value<std::string>()->default_value("0"),
      "train on the first N training images only (0: all)")(
      "save", po::value<std::string>(), "write the model to FILE after every epoch (atomically)")(
      "resume", po::value<std::string>(), "continue training from a checkpoint written by --save (same --batch-size and --limit; "
      "--epochs is the total)")(
      "metrics", po::value<std::string>(), "write per-epoch figures to FILE.csv")(
      "step-log", po::value<std::string>(),
      "write one CSV row per training step to FILE: loss, learning rate, gradient norm and the "
      "norm of the step's weight change")(
      "json", "print a JSON summary as the last line of output")(
      "summary",
      "print the model's summary (each op's output shape, parameters and multiply-adds at "
      "--batch-size, and the totals) and exit without training");
  // Everything before training, on every rank; then the ranks agree to start
  // (Note [Ranks in the app]).
  mnist::TrainConfig cfg;
  bool json = false;
  std::string target;
  mnist::Dataset train_set, test_set;
  std::exception_ptr failed;
  try {
    po::variables_map vm = parse(desc, args);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return kExitOk;
    }
    cfg.model = vm["model"].as<std::string>();
    const auto& models = nn::model_names();
    if (std::find(models.begin(), models.end(), cfg.model) == models.end()) {
      throw UsageError("--model must be seed, seed-nopool, lenet5 or resnet, got '" + cfg.model +
                       "'");
    }
    cfg.epochs = int_option(vm, "epochs", 0, 100000);
    cfg.batch_size = int_option(vm, "batch-size", 1, 60000);
    if (vm.count("summary")) {
      std::cout << nn::summarize(nn::model_fn(cfg.model), cfg.batch_size).table();
      check_stdout();
      return kExitOk;
    }
    if (vm.count("optimizer")) {
      cfg.optimizer = vm["optimizer"].as<std::string>();
      try {
        nn::check_optimizer_name(cfg.optimizer);
      } catch (const Error&) {
        throw UsageError("--optimizer must be " + nn::optimizer_choices() + ", got '" +
                         cfg.optimizer + "'");
      }
    }
    if (vm.count("lr")) cfg.lr = positive_double_option(vm, "lr", 1e6);
    cfg.init = vm.count("init") ? vm["init"].as<std::string>()
                                : std::string(cfg.model == "resnet" ? "he" : "xavier");
    try {
      nn::parse_init(cfg.init);
    } catch (const Error& e) {
      throw UsageError(std::string("--init: ") + e.what());
    }
    cfg.schedule = vm["schedule"].as<std::string>();
    try {
      nn::check_schedule_name(cfg.schedule);
    } catch (const Error&) {
      throw UsageError("--schedule must be " + nn::schedule_choices() + ", got '" +
                       cfg.schedule + "'");
    }
    cfg.seed = static_cast<std::uint64_t>(
        int_option(vm, "seed", 0, std::numeric_limits<std::int64_t>::max()));
    if (vm.count("weight-decay")) {
      const std::string w = vm["weight-decay"].as<std::string>();
      char* end = nullptr;
      const double v = w.empty() ? -1.0 : std::strtod(w.c_str(), &end);
      if (w.empty() || end != w.c_str() + w.size() || !std::isfinite(v) || v < 0 || v > 1e6) {
        throw UsageError("--weight-decay must be a finite number in [0, 1e6], got '" + w + "'");
      }
      cfg.weight_decay = v;
    }
    cfg.warmup_epochs = int_option(vm, "warmup-epochs", 0, cfg.epochs);
    if (cfg.warmup_epochs > 0 && cfg.schedule != "cosine" && cfg.schedule != "constant") {
      throw UsageError("--warmup-epochs needs --schedule cosine or constant, not '" +
                       cfg.schedule + "'");
    }
    if (cfg.model == "resnet" && cfg.schedule != "cosine" && cfg.schedule != "constant") {
      throw UsageError("--model resnet needs --schedule cosine or constant (stepped per step), "
                       "not '" + cfg.schedule + "'");
    }
    cfg.augment = vm.count("augment") > 0;
    cfg.limit = int_option(vm, "limit", 0, std::numeric_limits<std::int64_t>::max());
    if (vm.count("save")) cfg.save = path_option(vm, "save");
    if (vm.count("resume")) cfg.resume = path_option(vm, "resume");
    if (vm.count("metrics")) cfg.metrics = path_option(vm, "metrics");
    if (vm.count("step-log")) cfg.step_log = path_option(vm, "step-log");
    json = vm.count("json") > 0;
    // No live line under --json, or under mpirun (its output is forwarded through a terminal
  // even when redirected).
  cfg.progress = !json && isatty(STDOUT_FILENO) == 1 && !dist::launched_by_mpi();
    const std::string data_dir = path_option(vm, "data");
    // Every output checked before any work (docs/reliability.md, "Output paths").
    {
      std::vector<NamedPath> inputs = data_files(data_dir, /*train=*/true);
      if (!cfg.resume.empty()) inputs.push_back({"--resume", cfg.resume});
      std::vector<OutputPath> outputs;
      if (!cfg.save.empty()) outputs.push_back({"--save", cfg.save, WriteMode::kReplace, "--resume"});
      if (!cfg.metrics.empty()) outputs.push_back({"--metrics", cfg.metrics, WriteMode::kTruncate, ""});
      if (!cfg.step_log.empty()) {
        outputs.push_back({"--step-log", cfg.step_log, WriteMode::kTruncate, ""});
      }
      if (g_comm->rank() != 0) outputs.clear();  // only rank 0 writes them
      check_outputs(outputs, inputs);
    }
    set_threads(vm);
    target = simd_target();

    train_set = load(data_dir, mnist::Split::kTrain, cfg.limit);
    test_set = load(data_dir, mnist::Split::kTest);
  } catch (...) {
    failed = std::current_exception();
  }
  agree_to_start(failed, cfg, train_set, test_set, target);
  if (g_comm->rank() != 0) {
    cfg.save.clear();
    cfg.metrics.clear();
    cfg.step_log.clear();
  }
  cfg.comm = g_comm;

  const std::string procs =
      g_comm->size() > 1 ? std::to_string(g_comm->size()) + " processes x " : std::string();
  std::printf("tbgrad-mnist: model %s, %lld training images, batch %lld, %s%d threads, SIMD %s\n",
              cfg.model.c_str(), static_cast<long long>(train_set.count),
              static_cast<long long>(cfg.batch_size), procs.c_str(), num_threads(),
              target.c_str());
  std::printf("%5s %10s %9s %9s %9s %8s %9s\n", "epoch", "train_loss", "train_acc", "test_loss",
              "test_acc", "seconds", "images/s");
  check_stdout();  // before any training: a lost result is found now, not after it
  cfg.stop = &g_stop_signal;
  install_stop_handlers();
  std::int64_t last_saved = -1;  // the epoch the --save checkpoint holds, once this run saved
  mnist::TrainResult r;
  try {
    r = mnist::train(cfg, train_set, test_set, [&](const mnist::EpochStats& s) {
      if (!cfg.save.empty()) last_saved = s.epoch;
      std::printf("%5lld %10.4f %8.2f%% %9.4f %8.2f%% %8.2f %9.0f\n",
                  static_cast<long long>(s.epoch), s.train_loss, 100 * s.train_accuracy,
                  s.test_loss, 100 * s.test_accuracy, s.seconds, s.images_per_second);
      check_stdout();
    });
  } catch (const mnist::Interrupted& e) {
    // Under mpirun, a rank that got no signal stops with the others (Note [Ranks in the app]).
    const int sig = g_stop_signal.load() ? g_stop_signal.load() : SIGTERM;
    if (g_comm->rank() != 0) return 128 + sig;
    std::string saved;
    if (cfg.save.empty()) {
      saved = "nothing was saved (no --save)";
    } else if (last_saved >= 0) {
      saved = cfg.save.string() + " holds epoch " + std::to_string(last_saved) +
              " (continue with --resume " + cfg.save.string() + ")";
    } else if (!cfg.resume.empty() && fs_equivalent(cfg.save, cfg.resume)) {
      saved = "no epoch completed; " + cfg.save.string() + " is unchanged";
    } else {
      saved = "no epoch completed, nothing was saved to " + cfg.save.string();
    }
    std::fflush(stdout);
    std::fprintf(stderr, "tbgrad-mnist: %s by %s; %s\n", e.what(),
                 g_stop_signal.load() == 0 ? "a signal to another rank"
                 : sig == SIGTERM          ? "SIGTERM"
                                           : "SIGINT",
                 saved.c_str());
    return 128 + sig;
  }
  const double ips = r.train_seconds > 0 ? static_cast<double>(r.images_trained) / r.train_seconds : 0;
  std::printf("test accuracy %.2f%% (loss %.4f) after %lld epochs; training took %.2f s (%.0f images/s)\n",
              100 * r.test.accuracy, r.test.loss, static_cast<long long>(r.epochs_trained), r.train_seconds,
              ips);
  const auto& ex = r.exchange;
  const double exchange_us = ex.steps ? 1e6 * ex.seconds / static_cast<double>(ex.steps) : 0;
  if (g_comm->size() > 1) {
    std::printf("exchange between the %d processes: %.1f KB per step, %.1f us per step in the "
                "allgather (%lld steps)\n",
                g_comm->size(), static_cast<double>(ex.bytes) / 1024, exchange_us,
                static_cast<long long>(ex.steps));
  }
  if (json) {
    nlohmann::json j = {{"model", cfg.model},
                        {"epochs", r.epochs_trained},
                        {"epochs_run", r.epochs.size()},
                        {"batch_size", r.batch_size},
                        {"optimizer", r.optimizer},
                        {"lr", r.lr},
                        {"threads", num_threads()},
                        {"processes", g_comm->size()},
                        {"exchange_bytes_per_step", ex.bytes},
                        {"exchange_us_per_step", exchange_us},
                        {"isa", target},
                        {"seed", cfg.seed},
                        {"train_images", train_set.count},
                        {"train_seconds", r.train_seconds},
                        {"images_per_second", ips},
                        {"test_accuracy", r.test.accuracy},
                        {"test_loss", r.test.loss}};
    std::printf("%s\n", j.dump().c_str());
  }
  return kExitOk;
}

int cmd_eval(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tbgrad-mnist eval --load FILE [options]\n\n"
      "Prints test accuracy and loss, per-class accuracy and the confusion matrix.\n\noptions");
  desc.add_options()("help,h", "show this help")("load", po::value<std::string>(),
                                                  "checkpoint written by 'train --save'")(
      "data", po::value<std::string>()->default_value(default_data_dir()),
      "directory with the MNIST test files (raw or .gz)")(
      "threads", po::value<std::string>(), "worker threads (default: all cores)")(
      "json", "print a JSON summary as the last line of output");
  po::variables_map vm = parse(desc, args);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  if (!vm.count("load")) throw UsageError("eval needs --load FILE");
  const std::string load_path = path_option(vm, "load");
  const std::string data_dir = path_option(vm, "data");
  set_threads(vm);
  const std::string target = simd_target();
  mnist::Model model = mnist::Model::load(load_path);
  mnist::Dataset test_set = load(data_dir, mnist::Split::kTest);
  mnist::EvalResult r = model.evaluate(test_set);
  std::printf("model %s (%lld epochs) on %lld test images\n", model.name().c_str(),
              static_cast<long long>(model.epochs_trained()), static_cast<long long>(r.count));
  std::printf("test accuracy %.2f%%, test loss %.4f\n\nper-class accuracy:\n", 100 * r.accuracy,
              r.loss);
  std::vector<double> per_class(10);
  for (std::size_t c = 0; c < 10; ++c) {
    std::int64_t total = 0;
    for (std::int64_t v : r.confusion[c]) total += v;
    per_class[c] = total ? static_cast<double>(r.confusion[c][c]) / static_cast<double>(total) : 0;
    std::printf("  %zu: %6.2f%% (%lld images)\n", c, 100 * per_class[c], static_cast<long long>(total));
  }
  std::printf("\nconfusion matrix (rows: true digit, columns: predicted):\n      ");
  for (int c = 0; c < 10; ++c) std::printf("%6d", c);
  std::printf("\n");
  for (std::size_t t = 0; t < 10; ++t) {
    std::printf("  %2zu: ", t);
    for (std::size_t p = 0; p < 10; ++p) std::printf("%6lld", static_cast<long long>(r.confusion[t][p]));
    std::printf("\n");
  }
  if (vm.count("json")) {
    nlohmann::json j = {{"model", model.name()},          {"epochs", model.epochs_trained()},
                        {"test_images", r.count},          {"test_accuracy", r.accuracy},
                        {"test_loss", r.loss},             {"per_class_accuracy", per_class},
                        {"confusion", r.confusion},        {"isa", target}};
    std::printf("%s\n", j.dump().c_str());
  }
  return kExitOk;
}

int cmd_predict(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tbgrad-mnist predict --load FILE IMAGE...\n\n"
      "Classifies each image (PNG or PGM; scaled to 28x28 like MNIST: a light background is\n"
      "inverted, the digit centred) and prints the digit and the class probabilities.\n\noptions");
  desc.add_options()("help,h", "show this help")("load", po::value<std::string>(),
                                                  "checkpoint written by 'train --save'")(
      "image", po::value<std::vector<std::string>>(), "image files (positional)");
  po::positional_options_description pos;
  pos.add("image", -1);
  po::variables_map vm = parse(desc, args, &pos);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  if (!vm.count("load")) throw UsageError("predict needs --load FILE");
  if (!vm.count("image")) throw UsageError("predict needs at least one IMAGE");
  const std::string load_path = path_option(vm, "load");
  set_num_threads(1);
  mnist::Model model = mnist::Model::load(load_path);
  int status = kExitOk;
  for (const std::string& file : vm["image"].as<std::vector<std::string>>()) {
    try {
      const std::vector<float> input = mnist::to_mnist_input(mnist::read_image(file));
      const std::array<double, 10> p = model.predict(input);
      const auto best = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
      std::printf("%s: %d (p=%.3f)  [", file.c_str(), best, p[static_cast<std::size_t>(best)]);
      for (int c = 0; c < 10; ++c) std::printf("%s%d:%.3f", c ? " " : "", c, p[static_cast<std::size_t>(c)]);
      std::printf("]\n");
    } catch (const mnist::ImageError& e) {
      std::fprintf(stderr, "tbgrad-mnist: %s\n", e.what());
      status = kExitError;
    }
  }
  return status;
}

int cmd_inspect(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tbgrad-mnist inspect --load FILE --out FILE.json [options]\n\n"
      "Runs one test image through a saved model and writes, as JSON, the image, every\n"
      "layer's output for it (feature maps before and after each ReLU, pooled maps, fully\n"
      "connected activations, logits), the class probabilities and every convolution's\n"
      "kernels. scripts/plot_experiments.py draws them.\n\noptions");
  desc.add_options()("help,h", "show this help")("load", po::value<std::string>(),
                                                  "checkpoint written by 'train --save'")(
      "data", po::value<std::string>()->default_value(default_data_dir()),
      "directory with the MNIST test files (raw or .gz)")(
      "index", po::value<std::string>()->default_value("0"), "which test image (0-based)")(
      "out", po::value<std::string>(), "JSON file to write (atomically)");
  po::variables_map vm = parse(desc, args);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  if (!vm.count("load")) throw UsageError("inspect needs --load FILE");
  if (!vm.count("out")) throw UsageError("inspect needs --out FILE");
  const std::int64_t index = int_option(vm, "index", 0, std::numeric_limits<std::int64_t>::max());
  const std::string load_path = path_option(vm, "load");
  const std::string data_dir = path_option(vm, "data");
  const std::string out = path_option(vm, "out");
  {
    std::vector<NamedPath> inputs = data_files(data_dir, /*train=*/false);
    inputs.push_back({"--load", load_path});
    check_outputs({{"--out", out, WriteMode::kReplace, ""}}, inputs);
  }
  set_num_threads(1);
  mnist::Model model = mnist::Model::load(load_path);
  mnist::Dataset test_set = load(data_dir, mnist::Split::kTest);
  if (index >= test_set.count) {
    throw UsageError("--index must be below the " + std::to_string(test_set.count) +
                     " test images, got " + std::to_string(index));
  }
  const mnist::Inspection r = model.inspect(test_set, index);
  auto to_json = [](const mnist::Inspection::Array& a) {
    return nlohmann::json{{"name", a.name}, {"shape", a.shape}, {"data", a.data}};
  };
  nlohmann::json j = {{"model", model.name()},
                      {"epochs", model.epochs_trained()},
                      {"index", r.index},
                      {"label", r.label},
                      {"predicted", r.predicted},
                      {"probabilities", r.probabilities},
                      {"image", to_json(r.image)},
                      {"layers", nlohmann::json::array()},
                      {"kernels", nlohmann::json::array()}};
  for (const auto& a : r.layers) j["layers"].push_back(to_json(a));
  for (const auto& a : r.kernels) j["kernels"].push_back(to_json(a));
  nn::write_file_atomically(out, j.dump() + "\n");
  std::printf("test image %lld (digit %d): predicted %d (p=%.3f); %zu layers, %zu kernels -> %s\n",
              static_cast<long long>(r.index), r.label, r.predicted,
              r.probabilities[static_cast<std::size_t>(r.predicted)], r.layers.size(),
              r.kernels.size(), out.c_str());
  return kExitOk;
}

}  // namespace

// Standard descriptors that are closed would be reused by the next open() (a checkpoint's
// temporary file could receive printf's output): fill them with /dev/null. Returns false if
// stdout was closed, which is an error since stdout carries the results.
bool guard_standard_descriptors() {
  bool stdout_open = true;
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    if (fd == STDOUT_FILENO) stdout_open = false;
    const int null = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (null >= 0 && null != fd) {
      ::dup2(null, fd);
      ::close(null);
    }
  }
  return stdout_open;
}

int main(int argc, char** argv) {
  // Exceeding a file-size limit must become a write error (and a clean message), not a kill.
  std::signal(SIGXFSZ, SIG_IGN);
  if (!guard_standard_descriptors()) {
    std::fprintf(stderr, "tbgrad-mnist: standard output is closed\n");
    return kExitError;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kProgramHelp;
    try {
      check_stdout();
    } catch (const StdoutError& e) {
      std::fprintf(stderr, "tbgrad-mnist: %s\n", e.what());
      return kExitError;
    }
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  // Note [Ranks in the app].
  std::unique_ptr<dist::MpiSession> mpi;
  if (dist::launched_by_mpi() && dist::launched_size() > 1) {
    if (!dist::mpi_built()) {
      std::fprintf(stderr,
                   "tbgrad-mnist: started by mpirun with %d processes, but this build has no MPI "
                   "(configure with -DTBGRAD_MPI=ON after scripts/install_deps.sh --with-mpi)\n",
                   dist::launched_size());
      return kExitUsage;
    }
    try {
      mpi = std::make_unique<dist::MpiSession>(&argc, &argv);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tbgrad-mnist: cannot start MPI: %s\n", e.what());
      return kExitError;
    }
    g_comm = &mpi->world();
    g_quiet_rank.store(g_comm->rank() != 0);
    if (g_comm->rank() != 0) {
      if (command != "train") return kExitOk;  // they run on rank 0 alone
      if (!std::freopen("/dev/null", "w", stdout)) return kExitError;
    }
  }
  try {
    int status = kExitUsage;
    if (command == "train") {
      status = cmd_train(args);
    } else if (command == "eval") {
      status = cmd_eval(args);
    } else if (command == "predict") {
      status = cmd_predict(args);
    } else if (command == "inspect") {
      status = cmd_inspect(args);
    } else {
      std::fprintf(stderr, "tbgrad-mnist: unknown command '%s'\n\n%s", command.c_str(), kProgramHelp);
      return kExitUsage;
    }
    check_stdout();
    return status;
  } catch (...) {
    const Failure f = classify(command);
    std::fflush(stdout);
    const bool ranks = g_comm->size() > 1;
    if (!f.collective || g_comm->rank() == 0) {
      if (ranks && g_comm->rank() != 0) std::fprintf(stderr, "[rank %d] ", g_comm->rank());
      if (!f.message.empty()) std::fprintf(stderr, "%s\n", f.message.c_str());
    }
    if (ranks && !f.collective) mpi->abort(f.code);  // the others would wait for this rank
    return f.code;
  }
}
