// Forwards to <tbgrad/distributed/communicator.hpp>, the header's home since dist/ was renamed
// distributed/; kept for source compatibility, so code that includes the old path compiles
// unchanged. New code should include the new path.
#pragma once

#include "tbgrad/distributed/communicator.hpp"
