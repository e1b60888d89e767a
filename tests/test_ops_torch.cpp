// Every op case of tests/op_cases.cpp against PyTorch: tbgrad's value of the case, and its
// gradients of sum(out * R) (R random) with respect to every float input, against torch's in
// float64 and float32.
//
// The first test to need them runs every case with tbgrad (float64 and float32 graphs, the
// gradients through tbgrad::grad and an Executor, none for an op without a VJP), writes inputs,
// R, outputs and gradients to a temporary directory, and starts tests/torch_reference.py once for
// all of them (importing torch takes seconds), which evaluates each case's expression with torch
// and reports the differences. One test per case and dtype then holds them to the tolerance.
//
// Python: $TBGRAD_PYTHON, else the first of python3 and /usr/bin/python3 that imports torch
// (a python3 of pyenv or a virtual environment may come first on the PATH without it). Without
// one, the tests skip with the reason, and fail when $CI is set (CI installs python3-torch:
// scripts/install_deps.sh).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "op_cases.hpp"
#include "run_command.hpp"

namespace {

namespace fs = std::filesystem;
using tbgrad::DType;
using tbgrad::Executor;
using tbgrad::Tensor;
using tbgrad::Value;
using tbgrad::testing::OpCase;
using json = nlohmann::json;

// |tbgrad - torch| over max(1, largest |torch|), for values and gradients. Float64 kernels agree
// with torch's to rounding; float32 ones differ by float32 rounding in sums of up to a few
// thousand terms.
double tolerance(DType t) {
  return t == DType::kF64 ? 1e-10 : 1e-5;
}

struct Record {
  const OpCase* c;
  DType dtype;
  std::string id() const { return c->id() + "_" + tbgrad::dtype_name(dtype); }
};

void PrintTo(const Record& r, std::ostream* os) {
  *os << r.id();
}

std::vector<Record> all_records() {
  std::vector<Record> records;
  for (const OpCase& c : tbgrad::testing::op_cases()) {
    for (DType t : {DType::kF64, DType::kF32}) records.push_back({&c, t});
  }
  return records;
}

using tbgrad::testing::in_ci;
using tbgrad::testing::quote;

// Appends float64 values to the file of all values, remembering where they start.
class Values {
 public:
  explicit Values(const fs::path& file) : out_(file, std::ios::binary | std::ios::trunc) {}
  std::int64_t append(const Tensor& t) {
    const std::int64_t offset = count_;
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      const double v = t.at(i);
      out_.write(reinterpret_cast<const char*>(&v), sizeof v);
    }
    count_ += t.numel();
    return offset;
  }
  bool ok() const { return static_cast<bool>(out_); }

 private:
  std::ofstream out_;
  std::int64_t count_ = 0;
};

json shape_json(const tbgrad::Shape& s) {
  json a = json::array();
  for (std::int64_t d : s.dims()) a.push_back(d);
  return a;
}

// Runs the record's case with tbgrad and describes it, and where its tensors are, for the script.
json run_with_tbgrad(const Record& r, Values& values) {
  const OpCase& c = *r.c;
  tbgrad::testing::CaseGraph cg = tbgrad::testing::build_case(c, r.dtype);
  const std::vector<Tensor> inputs = tbgrad::testing::make_inputs(c, r.dtype);
  const bool gradients = tbgrad::testing::op_has_vjp(c.op);
  std::vector<Value> outputs = {cg.out};
  std::vector<Value> wrt;
  Tensor rt;
  if (gradients) {
    rt = tbgrad::testing::random_tensor(cg.out.shape(), r.dtype, tbgrad::testing::case_seed(c) + 1);
    Value loss = tbgrad::sum(tbgrad::mul(cg.out, cg.graph.constant(rt, "R")));
    for (std::size_t i = 0; i < c.inputs.size(); ++i) {
      if (c.inputs[i].is_float()) wrt.push_back(cg.inputs[i]);
    }
    for (Value g : tbgrad::grad(loss, wrt)) outputs.push_back(g);
  }
  Executor ex(cg.graph, outputs);
  for (std::size_t i = 0; i < inputs.size(); ++i) ex.bind(cg.inputs[i], inputs[i]);
  ex.run();

  json rec = {{"id", r.id()},
              {"dtype", tbgrad::dtype_name(r.dtype)},
              {"torch", c.torch},
              {"gradients", gradients}};
  json in = json::array();
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    in.push_back({{"name", c.inputs[i].name},
                  {"shape", shape_json(c.inputs[i].shape)},
                  {"labels", !c.inputs[i].is_float()},
                  {"offset", values.append(inputs[i])}});
  }
  rec["inputs"] = in;
  rec["out"] = {{"shape", shape_json(cg.out.shape())}, {"offset", values.append(ex.get(cg.out))}};
  if (gradients) {
    rec["r_offset"] = values.append(rt);
    json grads = json::array();
    for (std::size_t k = 0; k < wrt.size(); ++k) {
      grads.push_back({{"name", wrt[k].name()}, {"offset", values.append(ex.get(outputs[k + 1]))}});
    }
    rec["grads"] = grads;
  }
  return rec;
}

// What the script said, by record id; or why it could not be run.
struct Comparison {
  bool torch_missing = false;
  std::string problem;  // why there are no results; empty when there are
  std::map<std::string, json> results;
  std::map<std::string, std::string> tbgrad_errors;  // by record id: what tbgrad threw
  std::string torch_version;
  double tbgrad_seconds = 0, python_seconds = 0, script_seconds = 0;
  fs::path dir;
};

Comparison compare() {
  Comparison cmp;
  cmp.dir = fs::temp_directory_path() / ("tbgrad_test_ops_torch_" + std::to_string(::getpid()));
  fs::remove_all(cmp.dir);
  fs::create_directories(cmp.dir);
  const fs::path manifest = cmp.dir / "manifest.json", results = cmp.dir / "results.json";
  const fs::path values_file = cmp.dir / "values.f64";

  const auto t0 = std::chrono::steady_clock::now();
  json records = json::array();
  {
    Values values(values_file);
    for (const Record& r : all_records()) {
      try {
        records.push_back(run_with_tbgrad(r, values));
      } catch (const std::exception& e) {
        cmp.tbgrad_errors[r.id()] = e.what();
      }
    }
    if (!values.ok()) {
      cmp.problem = "could not write " + values_file.string();
      return cmp;
    }
  }
  std::ofstream(manifest) << json{{"values", values_file.string()}, {"records", records}}.dump();
  const auto t1 = std::chrono::steady_clock::now();
  cmp.tbgrad_seconds = std::chrono::duration<double>(t1 - t0).count();

  std::vector<std::string> pythons;
  if (const char* p = std::getenv("TBGRAD_PYTHON"); p != nullptr && *p != '\0') {
    pythons = {p};
  } else {
    pythons = {"python3", "/usr/bin/python3"};
  }
  std::string tried;
  for (const std::string& python : pythons) {
    const tbgrad::testing::CommandResult run =
        tbgrad::testing::run_command(quote(python) + " " + quote(TBGRAD_TORCH_REFERENCE) + " " +
                                     quote(manifest.string()) + " " + quote(results.string()));
    if (run.code == 0) {
      cmp.python_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
      const json r = json::parse(std::ifstream(results));
      cmp.torch_version = r.at("torch").get<std::string>();
      cmp.script_seconds = r.at("seconds").get<double>();
      for (const json& rec : r.at("records")) cmp.results[rec.at("id").get<std::string>()] = rec;
      fs::remove_all(cmp.dir);
      return cmp;
    }
    tried +=
        "\n  " + python + ": " + (run.out.empty() ? "exit " + std::to_string(run.code) : run.out);
    // 127: no such program; 3: it cannot import torch. Anything else is the script's failure.
    if (run.code != 127 && run.code != 3) {
      cmp.problem =
          "tests/torch_reference.py failed (inputs kept in " + cmp.dir.string() + "):" + tried;
      return cmp;
    }
  }
  cmp.torch_missing = true;
  cmp.problem =
      "no Python with PyTorch: the comparison with PyTorch needs python3 and torch "
      "(Debian: apt-get install python3-torch python3-numpy; or set TBGRAD_PYTHON to "
      "a python3 that imports torch). Tried:" +
      tried;
  fs::remove_all(cmp.dir);
  return cmp;
}

const Comparison& comparison() {
  static const Comparison cmp = compare();
  return cmp;
}

TEST(TorchReference, RunsForEveryCase) {
  const Comparison& cmp = comparison();
  // tests/CMakeLists.txt marks the ctest skipped on "skipped: no Python with PyTorch".
  if (cmp.torch_missing && !in_ci()) GTEST_SKIP() << "skipped: " << cmp.problem;
  ASSERT_TRUE(cmp.problem.empty())
      << (cmp.torch_missing ? "CI is set, so PyTorch is required: " : "") << cmp.problem;
  EXPECT_EQ(cmp.results.size() + cmp.tbgrad_errors.size(), all_records().size());
  std::cout << "PyTorch " << cmp.torch_version << ": " << all_records().size()
            << " records (cases x f64, f32); tbgrad " << cmp.tbgrad_seconds << " s, Python "
            << cmp.python_seconds << " s (of which the comparisons " << cmp.script_seconds
            << " s)\n";
  // The largest relative difference per dtype, for a feel of the margin to the tolerance.
  for (DType t : {DType::kF64, DType::kF32}) {
    double worst = 0;
    std::string where;
    for (const Record& r : all_records()) {
      const auto it = cmp.results.find(r.id());
      if (r.dtype != t || it == cmp.results.end() || !it->second.at("error").is_null()) continue;
      std::vector<json> entries = {it->second.at("forward")};
      for (const json& g : it->second.at("grads")) entries.push_back(g);
      for (const json& e : entries) {
        if (!e.at("rel").is_null() && e.at("rel").get<double>() >= worst) {
          worst = e.at("rel").get<double>();
          where = r.id();
        }
      }
    }
    std::cout << "  largest relative difference in " << tbgrad::dtype_name(t) << ": " << worst
              << " (" << where << "; tolerance " << tolerance(t) << ")\n";
  }
}

class OpTorch : public ::testing::TestWithParam<Record> {};

// The largest difference, with the case's expression, when it is over the tolerance.
::testing::AssertionResult Within(const json& entry, double tol, const std::string& what,
                                  const Record& r) {
  if (!entry.at("rel").is_null() && entry.at("rel").get<double>() <= tol) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << r.id() << ": " << what << " differs from PyTorch's: max |tbgrad - torch| "
         << entry.at("max_abs") << ", relative " << entry.at("rel") << " (tolerance " << tol
         << ")\n  torch: " << r.c->torch;
}

TEST_P(OpTorch, MatchesPyTorch) {
  const Record& r = GetParam();
  const Comparison& cmp = comparison();
  if (const auto e = cmp.tbgrad_errors.find(r.id()); e != cmp.tbgrad_errors.end()) {
    FAIL() << r.id() << ": tbgrad threw: " << e->second;
  }
  if (!cmp.problem.empty()) GTEST_SKIP() << "no results: see TorchReference.RunsForEveryCase";
  const auto it = cmp.results.find(r.id());
  ASSERT_NE(it, cmp.results.end()) << r.id() << ": no result from tests/torch_reference.py";
  const json& res = it->second;
  ASSERT_TRUE(res.at("error").is_null())
      << r.id() << ": torch could not evaluate " << r.c->torch << "\n  " << res.at("error");
  const double tol = tolerance(r.dtype);
  EXPECT_TRUE(Within(res.at("forward"), tol, "the value", r));
  for (const json& g : res.at("grads")) {
    EXPECT_TRUE(Within(g, tol, "the gradient wrt " + g.at("name").get<std::string>(), r));
  }
  if (tbgrad::testing::op_has_vjp(r.c->op)) {
    std::size_t floats = 0;
    for (const auto& in : r.c->inputs) floats += in.is_float() ? 1 : 0;
    EXPECT_EQ(res.at("grads").size(), floats) << r.id() << ": a gradient per float input";
  }
}

INSTANTIATE_TEST_SUITE_P(Table, OpTorch, ::testing::ValuesIn(all_records()),
                         [](const ::testing::TestParamInfo<Record>& info) {
                           return info.param.id();
                         });

}  // namespace
