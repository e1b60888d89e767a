#include "apps/mnist/step_log.hpp"

#include <cstdio>

namespace tbgrad::mnist {

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace tbgrad::mnist
