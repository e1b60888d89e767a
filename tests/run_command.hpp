// Runs a shell command for the tests that drive programs (test_cli, test_examples, test_mpi,
// the PyTorch comparisons).
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace tbgrad::testing {

struct CommandResult {
  int code;         // the exit status; -1 if killed by a signal or not started
  std::string out;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Whether the tests run under CI (CI set, and not "false" or "0"): a test that needs an optional
// tool (PyTorch) fails there instead of skipping.
inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && *ci != '\0' && std::string(ci) != "false" && std::string(ci) != "0";
}

// `s` as one word of a POSIX shell command line.
inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

}  // namespace tbgrad::testing
