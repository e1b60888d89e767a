// tbgrad: computation graphs of tensor ops, reverse-mode autodiff, oneTBB-parallel kernels.
// This umbrella header is the public API; each header is also reachable on its own as
// <tbgrad/graph/graph.hpp>, <tbgrad/nn/train.hpp>, ...
#pragma once

#include "tbgrad/autodiff/grad.hpp"
#include "tbgrad/autodiff/gradcheck.hpp"
#include "tbgrad/data/dataset.hpp"
#include "tbgrad/data/idx.hpp"
#include "tbgrad/graph/executor.hpp"
#include "tbgrad/graph/graph.hpp"
#include "tbgrad/graph/isa.hpp"
#include "tbgrad/graph/op.hpp"
#include "tbgrad/graph/parallel.hpp"
#include "tbgrad/graph/tensor.hpp"
#include "tbgrad/nn/checkpoint.hpp"
#include "tbgrad/nn/init.hpp"
#include "tbgrad/nn/models.hpp"
#include "tbgrad/nn/optim.hpp"
#include "tbgrad/nn/params.hpp"
#include "tbgrad/nn/params_io.hpp"
#include "tbgrad/nn/train.hpp"
#include "tbgrad/ops/conv2d.hpp"
#include "tbgrad/ops/elementwise.hpp"
#include "tbgrad/ops/matmul.hpp"
#include "tbgrad/ops/pool2d.hpp"
#include "tbgrad/ops/reduce.hpp"
#include "tbgrad/ops/shape.hpp"
#include "tbgrad/ops/softmax.hpp"
