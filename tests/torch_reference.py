#!/usr/bin/env python3
"""PyTorch's values and gradients for tbgrad's op test cases (tests/test_ops_torch.cpp).

Usage: torch_reference.py MANIFEST RESULTS

MANIFEST (JSON, written by the test) lists records, one per op case and dtype: the case's PyTorch
expression (tests/op_cases.cpp), its inputs, and where tbgrad's inputs, output, the random R and
tbgrad's gradients of sum(out * R) with respect to every float input lie in the binary file
MANIFEST names (little-endian float64; labels as whole numbers). For each record this script
evaluates the expression with torch in the record's dtype, the float inputs leaf tensors that
require grad, computes the same gradients with torch.autograd.grad, and writes to RESULTS, per
record, the largest absolute difference from tbgrad's and that difference over the largest
magnitude of torch's tensor (at least 1). It judges nothing: the test holds the tolerances.

In an expression: torch, F (torch.nn.functional), the inputs by name, and vjp (below).

Exit status: 0 when RESULTS was written (a record whose expression failed carries its error),
3 when torch cannot be imported, 2 on bad arguments.
"""

import json
import math
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError as error:
    print(f"torch_reference.py: {sys.executable} cannot import torch ({error}); "
          "install it with: apt-get install python3-torch", file=sys.stderr)
    sys.exit(3)

DTYPES = {"f64": torch.float64, "f32": torch.float32}


def vjp(fn, primal, cotangent):
    """d/d primal of sum(fn(primal) * cotangent): PyTorch's gradient of a forward op, the value a
    tbgrad gradient kernel computes. primal is an input tensor, or a shape: then the gradient is
    taken at zeros (for an fn linear in primal it does not depend on where). The result stays
    differentiable (create_graph), as tbgrad's gradient kernels with a VJP are."""
    if not isinstance(primal, torch.Tensor):
        primal = torch.zeros(primal, dtype=cotangent.dtype, requires_grad=True)
    (gradient,) = torch.autograd.grad(fn(primal), primal, cotangent, create_graph=True)
    return gradient


def difference(ours, theirs):
    """Largest |ours - theirs|, and that over max(1, largest |theirs|); None if not finite."""
    theirs = theirs.detach().to(torch.float64)
    if tuple(ours.shape) != tuple(theirs.shape):
        raise ValueError(f"shape {list(theirs.shape)} from torch, {list(ours.shape)} from tbgrad")
    if ours.numel() == 0:
        return {"max_abs": 0.0, "rel": 0.0}
    max_abs = (ours - theirs).abs().max().item()
    scale = max(1.0, theirs.abs().max().item())
    if not math.isfinite(max_abs) or not math.isfinite(scale):
        return {"max_abs": None, "rel": None}
    return {"max_abs": max_abs, "rel": max_abs / scale}


def evaluate(record, values):
    def read(offset, shape):
        count = math.prod(shape)
        return values[offset:offset + count].reshape(shape)

    dtype = DTYPES[record["dtype"]]
    scope = {"torch": torch, "F": F, "vjp": vjp}
    floats = []  # (name, tensor) of the float inputs
    for inp in record["inputs"]:
        value = read(inp["offset"], inp["shape"])
        if inp["labels"]:
            value = value.to(torch.int64)
        else:
            value = value.to(dtype).requires_grad_()
            floats.append((inp["name"], value))
        scope[inp["name"]] = value
    out = eval(record["torch"], scope)  # pylint: disable=eval-used
    if out.dtype != dtype:
        raise TypeError(f"torch gave {out.dtype}, expected {dtype}")
    out_shape = record["out"]["shape"]
    result = {"forward": difference(read(record["out"]["offset"], out_shape), out), "grads": []}
    if record["gradients"]:
        r = read(record["r_offset"], out_shape).to(dtype)
        tensors = [t for _, t in floats]
        grads = torch.autograd.grad((out * r).sum(), tensors, allow_unused=True)
        for (name, tensor), grad, ours in zip(floats, grads, record["grads"]):
            if grad is None:  # torch: the output does not depend on this input
                grad = torch.zeros_like(tensor)
            entry = difference(read(ours["offset"], list(tensor.shape)), grad)
            entry["name"] = name
            result["grads"].append(entry)
    return result


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    start = time.monotonic()
    with open(argv[1], encoding="utf-8") as f:
        manifest = json.load(f)
    with open(manifest["values"], "rb") as f:
        values = torch.frombuffer(bytearray(f.read()), dtype=torch.float64)
    results = []
    for record in manifest["records"]:
        try:
            result = evaluate(record, values)
            result["error"] = None
        except Exception as error:  # pylint: disable=broad-except
            result = {"error": f"{type(error).__name__}: {error}"}
        result["id"] = record["id"]
        results.append(result)
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump({"torch": torch.__version__, "seconds": time.monotonic() - start,
                   "records": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
