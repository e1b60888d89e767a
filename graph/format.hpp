// Numbers as text that reads back as the same number, for messages, CSV files and checkpoint
// metadata: one definition for the library (nn/) and the app (apps/mnist/).
#pragma once

#include <string>

namespace tbgrad {

// A double printed with enough digits to read back exactly ("%.17g").
std::string format_double(double v);

}  // namespace tbgrad
