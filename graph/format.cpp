#include "graph/format.hpp"

#include <cstdio>

namespace tbgrad {

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace tbgrad
