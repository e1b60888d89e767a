// Forwards to <tbgrad/distributed/mpi.hpp>, the header's home since dist/ was renamed
// distributed/; kept for source compatibility, so code that includes the old path compiles
// unchanged. New code should include the new path.
#pragma once

#include "tbgrad/distributed/mpi.hpp"
