#!/usr/bin/env python3
"""torch.optim's parameters and learning rates for tbgrad's optimizer runs (tests/test_optim_torch.cpp).

Usage: optim_reference.py MANIFEST RESULTS

MANIFEST (JSON, written by the test) lists runs. Each run has initial parameters (float32, flat,
with shapes), a gradient for every parameter at every step, an optimizer (sgd, momentum,
nesterov, adam, adamw) with its learning rate, weight decay and which parameters decay, an
optional max_norm (torch.nn.utils.clip_grad_norm_ before each step) and an optional schedule
(constant, step, multistep, cosine with warmup, onecycle, plateau, with the metrics plateau
steps on). This script runs the same steps with torch.optim and writes to RESULTS, per run, the
learning rate each step used, the clipping norm each step saw, and the final parameters. It
judges nothing: the test compares and holds the tolerances.

Exit status: 0 when RESULTS was written, 3 when torch cannot be imported, 2 on bad arguments.
"""

import json
import math
import sys

try:
    import torch
except ImportError as error:
    print(f"optim_reference.py: {sys.executable} cannot import torch ({error}); "
          "install it with: apt-get install python3-torch", file=sys.stderr)
    sys.exit(3)


def make_optimizer(run, params):
    kind, lr, wd = run["optimizer"], run["lr"], run["weight_decay"]
    decay = run["decay"]
    groups = [{"params": [p for p, d in zip(params, decay) if d], "weight_decay": wd},
              {"params": [p for p, d in zip(params, decay) if not d], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if kind == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=run["momentum"])
    if kind == "nesterov":
        return torch.optim.SGD(groups, lr=lr, momentum=run["momentum"], nesterov=True)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {kind}")


def make_schedule(run, opt):
    s = run.get("schedule")
    if s is None or s["kind"] == "constant":
        return None
    sched = torch.optim.lr_scheduler
    kind = s["kind"]
    if kind == "step":
        return sched.StepLR(opt, step_size=s["step_size"], gamma=s["gamma"])
    if kind == "multistep":
        return sched.MultiStepLR(opt, milestones=s["milestones"], gamma=s["gamma"])
    if kind == "cosine":
        warmup, total, min_lr = s["warmup"], s["total"], s["min_lr"]
        if warmup == 0:
            return sched.CosineAnnealingLR(opt, T_max=total, eta_min=min_lr)
        # Linear warmup to lr over `warmup` steps, then the half cosine: LinearLR then
        # CosineAnnealingLR, chained at the milestone as SequentialLR does.
        return sched.SequentialLR(opt, [
            sched.LinearLR(opt, start_factor=1.0 / warmup, end_factor=1.0,
                           total_iters=warmup - 1),
            sched.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr)],
            milestones=[warmup])
    if kind == "onecycle":
        return sched.OneCycleLR(opt, max_lr=run["lr"], total_steps=s["total"],
                                cycle_momentum=False)
    if kind == "plateau":
        return sched.ReduceLROnPlateau(opt, mode="min", factor=s["factor"],
                                       patience=s["patience"], cooldown=s["cooldown"],
                                       min_lr=s["min_lr"])
    raise ValueError(f"unknown schedule {kind}")


def run_one(run):
    params = [torch.tensor(p["data"], dtype=torch.float32).reshape(p["shape"]).requires_grad_()
              for p in run["params"]]
    opt = make_optimizer(run, params)
    schedule = make_schedule(run, opt)
    lrs, norms = [], []
    for step, grads in enumerate(run["grads"]):
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float32).reshape(p.shape)
        if run["max_norm"] > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, run["max_norm"])))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if schedule is not None:
            if run["schedule"]["kind"] == "plateau":
                schedule.step(run["schedule"]["metrics"][step])
            else:
                schedule.step()
    return {"id": run["id"], "lrs": lrs, "norms": norms,
            "params": [p.detach().reshape(-1).tolist() for p in params]}


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        manifest = json.load(f)
    torch.set_num_threads(1)
    results = {"torch": torch.__version__,
               "runs": [run_one(r) for r in manifest["runs"]]}
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
