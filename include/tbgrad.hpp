// tbgrad: computation graphs of tensor ops, reverse-mode autodiff, oneTBB-parallel kernels.
// This umbrella header is the public API.
#pragma once

#include "autodiff/grad.hpp"
#include "autodiff/gradcheck.hpp"
#include "graph/executor.hpp"
#include "graph/graph.hpp"
#include "graph/isa.hpp"
#include "graph/op.hpp"
#include "graph/parallel.hpp"
#include "graph/tensor.hpp"
#include "nn/init.hpp"
#include "nn/models.hpp"
#include "nn/optim.hpp"
#include "ops/conv2d.hpp"
#include "ops/elementwise.hpp"
#include "ops/matmul.hpp"
#include "ops/pool2d.hpp"
#include "ops/reduce.hpp"
#include "ops/shape.hpp"
#include "ops/softmax.hpp"
