// Runs a shell command for the tests that drive programs (test_cli, test_examples, test_mpi).
#pragma once

#include <sys/wait.h>

#include <cstdio>
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

}  // namespace tbgrad::testing
