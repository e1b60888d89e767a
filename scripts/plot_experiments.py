#!/usr/bin/env python3
"""Figures and tables of docs/experiments.md, from the raw outputs of scripts/experiments.sh.

usage: plot_experiments.py --raw DIR --figures DIR --doc FILE

Reads the per-epoch CSVs (tbgrad-mnist train --metrics), the JSON summaries (--json), the step
logs (--step-log), the evaluation of the best models (eval --json) and one inspection (inspect),
draws PNG figures with matplotlib and writes the Markdown with every figure in tables. Numbers
in the prose are computed here from the same files, so the text cannot drift from the data.
"""
import argparse
import csv
import json
import math
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"seed": "tab:blue", "seed-nopool": "tab:orange", "lenet5": "tab:green"}


def read_csv(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


class Raw:
    def __init__(self, directory):
        self.dir = directory

    def path(self, name):
        return os.path.join(self.dir, name)

    def epochs(self, name):
        p = self.path(name + ".csv")
        return read_csv(p) if os.path.exists(p) else []

    def summary(self, name):
        with open(self.path(name + ".json")) as f:
            return json.load(f)

    def json(self, name):
        with open(self.path(name)) as f:
            return json.load(f)


def pct(x):
    return f"{100 * x:.2f}%"


def secs(x):
    return f"{x:.2f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def save(fig, figures, name):
    fig.tight_layout()
    fig.savefig(os.path.join(figures, name), dpi=110)
    plt.close(fig)
    return name


def best_epoch(rows):
    """(best test accuracy, its epoch, training seconds until the end of that epoch)."""
    best = max(rows, key=lambda r: r["test_accuracy"])
    elapsed = sum(r["seconds"] for r in rows if r["epoch"] <= best["epoch"])
    return best["test_accuracy"], int(best["epoch"]), elapsed


def curves(ax_acc, ax_loss, rows, label, color, style="-"):
    ep = [r["epoch"] for r in rows]
    ax_acc.plot(ep, [100 * r["test_accuracy"] for r in rows], style, color=color, marker="o",
                ms=3, label=label)
    if ax_loss is not None:
        ax_loss.plot(ep, [r["test_loss"] for r in rows], style, color=color, marker="o", ms=3,
                     label=label + " (test)")
        ax_loss.plot(ep, [r["train_loss"] for r in rows], ":", color=color,
                     label=label + " (train)")


def q1_pooling(raw, figures):
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = []
    for model in ("seed", "seed-nopool"):
        e = raw.epochs("pool_" + model)
        curves(a, b, e, model, COLORS[model])
        acc, ep, t = best_epoch(e)
        per_epoch = statistics.median(r["seconds"] for r in e)
        rows.append([f"`{model}`", pct(e[-1]["test_accuracy"]), f"{e[-1]['test_loss']:.4f}",
                     f"{pct(acc)} (epoch {ep})", secs(per_epoch),
                     f"{statistics.median(r['images_per_second'] for r in e):.0f}"])
    a.set(xlabel="epoch", ylabel="test accuracy (%)", title="with and without pooling")
    b.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    a.legend(), b.legend(fontsize=7)
    name = save(fig, figures, "q1_pooling.png")
    e_pool, e_nopool = raw.epochs("pool_seed"), raw.epochs("pool_seed-nopool")
    ratio = statistics.median(r["seconds"] for r in e_nopool) / statistics.median(
        r["seconds"] for r in e_pool)
    text = (f"After {len(e_pool)} epochs `seed` reaches {pct(e_pool[-1]['test_accuracy'])} and "
            f"`seed-nopool` {pct(e_nopool[-1]['test_accuracy'])}; an epoch without pooling takes "
            f"{ratio:.1f}x as long (the report: 96% vs 98%, 2 vs 8 minutes per epoch, i.e. 4x).")
    return name, table(["model", "final test acc", "final test loss", "best test acc",
                        "s/epoch (median)", "images/s"], rows), text


def step_bins(path, batch, images, bins=100):
    """Per-bin median, 10th and 90th percentile of the update norm, and mean loss, over the
    first epoch, binned by images seen."""
    rows = [r for r in read_csv(path) if r["epoch"] == 1]
    width = max(1, images // bins)
    out = []
    for lo in range(0, images, width):
        sel = [r for r in rows if lo <= (r["step"] - 1) * batch < lo + width]
        if not sel:
            continue
        u = sorted(r["update_norm"] for r in sel)
        out.append({"images": lo + width / 2, "median": statistics.median(u),
                    "p10": u[int(0.1 * (len(u) - 1))], "p90": u[int(0.9 * (len(u) - 1))],
                    "loss": statistics.fmean(r["loss"] for r in sel), "steps": len(sel)})
    return out, rows


def q2_batch(raw, figures):
    runs = [(f"batch_{b}_lr{lr}", b, lr) for b in (1, 32, 256) for lr in (0.01, 0.1)]
    colors = {1: "tab:red", 32: "tab:blue", 256: "tab:purple"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    fig2, (c, d) = plt.subplots(1, 2, figsize=(10, 3.8))
    rows, summary_rows = [], []
    jitters = {}
    images = None
    for name, batch, lr in runs:
        s = raw.summary(name)
        style = "-" if lr == 0.1 else "--"
        label = f"batch {batch}, lr {lr}"
        if s.get("diverged"):
            rows.append([batch, lr, "diverged", "", "", "", s["message"][:60]])
            continue
        e = raw.epochs(name)
        images = images or int(s["train_images"])
        curves(a, None, e, label, colors[batch], style)
        t = 0.0
        xs, ys = [], []
        for r in e:
            t += r["seconds"]
            xs.append(t)
            ys.append(100 * r["test_accuracy"])
        b.plot(xs, ys, style, color=colors[batch], marker="o", ms=3, label=label)
        bins, steps = step_bins(raw.path(f"steps/{name}.csv"), batch, images)
        for row in bins:
            summary_rows.append([name, batch, lr, row["images"], row["median"], row["p10"],
                                 row["p90"], row["loss"], row["steps"]])
        x = [r["images"] for r in bins]
        c.plot(x, [r["median"] for r in bins], style, color=colors[batch], label=label)
        c.fill_between(x, [r["p10"] for r in bins], [r["p90"] for r in bins],
                       color=colors[batch], alpha=0.15)
        d.plot(x, [r["loss"] for r in bins], style, color=colors[batch], label=label)
        upd = [r["update_norm"] for r in steps]
        # Smoothness: how much consecutive steps' losses differ, relative to the loss.
        jitter = statistics.median(abs(steps[i]["loss"] - steps[i - 1]["loss"])
                                   for i in range(1, len(steps))) if len(steps) > 1 else 0
        jitters[(batch, lr)] = jitter
        rows.append([batch, lr, pct(e[0]["test_accuracy"]), pct(e[-1]["test_accuracy"]),
                     secs(statistics.median(r["seconds"] for r in e)),
                     f"{100 * e[-1]['test_accuracy'] / sum(r['seconds'] for r in e):.1f}",
                     f"{len(steps)} steps, median {statistics.median(upd):.3g}, "
                     f"median loss change {jitter:.3g}"])
    a.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy per epoch")
    b.set(xlabel="training seconds", ylabel="test accuracy (%)", title="accuracy per second")
    a.legend(fontsize=7), b.legend(fontsize=7)
    c.set(xlabel="images seen in epoch 1", ylabel="|weight change| per step", yscale="log",
          title="step size (median, 10-90% band)")
    d.set(xlabel="images seen in epoch 1", ylabel="training loss (bin mean)", yscale="log",
          title="training loss over epoch 1")
    c.legend(fontsize=7), d.legend(fontsize=7)
    names = save(fig, figures, "q2_batch_curves.png"), save(fig2, figures, "q2_step_size.png")
    finals = {}
    for name, batch, lr in runs:
        s = raw.summary(name)
        if not s.get("diverged"):
            finals[(batch, lr)] = s["test_accuracy"]
    best = max(finals, key=finals.get)
    stuck = [f"batch {b} at lr {lr}" for (b, lr), a in sorted(finals.items()) if a < 0.2]
    text = (f"Best: batch {best[0]} at lr {best[1]} ({pct(finals[best])}); "
            + (("stuck near chance: " + ", ".join(stuck)) if stuck else "none stuck near chance"))
    if (1, 0.01) in jitters and (256, 0.01) in jitters:
        text += (f"; at lr 0.01 the training loss moves by a median {jitters[(1, 0.01)]:.3g} from "
                 f"one step to the next at batch 1 against {jitters[(256, 0.01)]:.3g} at batch 256 "
                 "(the report's \"minibatches converge smoother\")")
    with open(raw.path("step_size_summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "batch", "lr", "images", "update_norm_median", "update_norm_p10",
                    "update_norm_p90", "loss_mean", "steps"])
        w.writerows(summary_rows)
    return names, text, table(["batch", "lr", "test acc epoch 1", "test acc last epoch",
                         "s/epoch (median)", "final acc % per training second",
                         "epoch-1 steps and their weight change"], rows)


def q3_init(raw, figures):
    inits = ("xavier", "uniform", "normal")
    seeds = sorted({int(f.split("_")[2].split(".")[0]) for f in os.listdir(raw.dir)
                    if f.startswith("init_xavier_") and f.endswith(".json")})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    rows = []
    stuck_counts = {}
    for ax, init in zip(axes, inits):
        finals, stuck, diverged = [], 0, 0
        for seed in seeds:
            name = f"init_{init}_{seed}"
            s = raw.summary(name)
            if s.get("diverged"):
                diverged += 1
                finals.append("diverged")
                continue
            e = raw.epochs(name)
            ax.plot([r["epoch"] for r in e], [100 * r["test_accuracy"] for r in e], marker="o",
                    ms=3, label=f"seed {seed}")
            acc = e[-1]["test_accuracy"]
            stuck += acc < 0.2
            finals.append(pct(acc))
        stuck_counts[init] = (stuck, diverged)
        ax.set(title=init, xlabel="epoch")
        ax.axhline(10, color="gray", lw=0.8, ls=":")
        rows.append([init, len(seeds), stuck, diverged, ", ".join(finals)])
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=7)
    name = save(fig, figures, "q3_init.png")
    text = "; ".join(f"{i}: {s} of {len(seeds)} runs stuck near chance, {d} diverged"
                     for i, (s, d) in stuck_counts.items())
    return name, table(["init", "runs", "stuck (< 20%)", "diverged", "final test accuracy per seed"],
                       rows), text


def q4_lr(raw, figures):
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = []
    by_opt = {}
    for f in sorted(os.listdir(raw.dir)):
        if f.startswith("lr_") and f.endswith(".json"):
            _, opt, lr = f[:-5].split("_")
            by_opt.setdefault(opt, []).append((float(lr), f[:-5]))
    colors = {"sgd": "tab:blue", "momentum": "tab:orange", "adam": "tab:green"}
    best = None
    for opt, runs in by_opt.items():
        xs, ys = [], []
        for lr, name in sorted(runs):
            s = raw.summary(name)
            if s.get("diverged"):
                rows.append([opt, lr, "diverged", "", ""])
                continue
            e = raw.epochs(name)
            xs.append(lr)
            ys.append(100 * e[-1]["test_accuracy"])
            rows.append([opt, lr, pct(e[-1]["test_accuracy"]), f"{e[-1]['test_loss']:.4f}",
                         pct(e[0]["test_accuracy"])])
            if best is None or e[-1]["test_accuracy"] > best[2]:
                best = (opt, lr, e[-1]["test_accuracy"])
            if (opt, lr) in (("sgd", 0.1), ("momentum", 0.03), ("adam", 0.003)):
                curves(b, None, e, f"{opt} {lr}", colors[opt])
        a.plot(xs, ys, marker="o", color=colors[opt], label=opt)
    a.set(xscale="log", xlabel="learning rate", ylabel="final test accuracy (%)",
          title="final accuracy (cosine schedule)")
    b.set(xlabel="epoch", ylabel="test accuracy (%)", title="learning curves")
    a.legend(), b.legend(fontsize=7)
    name = save(fig, figures, "q4_lr_sweep.png")
    text = f"Best of the sweep: {best[0]} at lr {best[1]} ({pct(best[2])})." if best else ""
    return name, table(["optimizer", "lr", "final test acc", "final test loss", "test acc epoch 1"],
                       rows), text


def q5_threads(raw, figures, machine, device):
    times = {}
    for f in os.listdir(raw.dir):
        if f.startswith("threads_") and f.endswith(".json"):
            _, model, t, _ = f[:-5].split("_")
            times.setdefault((model, int(t[1:])), []).append(raw.summary(f[:-5])["train_seconds"])
    rows = []
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, model in enumerate(("seed", "seed-nopool")):
        t1 = statistics.median(times[(model, 1)])
        t2 = statistics.median(times[(model, 2)])
        rows.append([f"`{model}`", len(times[(model, 1)]), secs(t1), secs(t2), f"{t1 / t2:.2f}x"])
        ax.bar([i - 0.2, i + 0.2], [t1, t2], width=0.4, color=["tab:gray", COLORS[model]])
        ax.text(i + 0.2, t2, f"{t1 / t2:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks([0, 1], ["seed", "seed-nopool"])
    ax.set(ylabel="seconds per epoch", title=f"1 (gray) and 2 threads, {machine['cpu']}")
    name = save(fig, figures, "q5_threads.png")
    dev_name, dev_table = None, None
    if device and os.path.exists(device):
        d = read_csv_str(device)
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for (model, batch), pts in group(d, ("model", "batch")).items():
            pts.sort(key=lambda r: int(r["threads"]))
            line, = ax.plot([int(r["threads"]) for r in pts], [float(r["seconds"]) for r in pts],
                            marker="o", label=f"tbgrad {model}, batch {batch}")
            torch = [(int(r["threads"]), float(r["torch_seconds"])) for r in pts
                     if r.get("torch_seconds")]
            if torch:
                ax.plot([t for t, _ in torch], [v for _, v in torch], "--", marker="x",
                        color=line.get_color(), label=f"PyTorch {model}, batch {batch}")
        ax.set(xscale="log", yscale="log", xlabel="threads", ylabel="seconds per epoch",
               title="16-core server")
        ax.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
        ax.legend(fontsize=6)
        dev_name = save(fig, figures, "q5_threads_server.png")
        header = ["model", "batch"] + [f"{t} threads" for t in (1, 2, 4, 8, 16)]
        trows = []
        for (model, batch), pts in group(d, ("model", "batch")).items():
            by_t = {int(r["threads"]): r for r in pts}
            cells = []
            for t in (1, 2, 4, 8, 16):
                r = by_t.get(t)
                if r is None:
                    cells.append("")
                elif r.get("torch_seconds"):
                    cells.append(f"{secs(float(r['seconds']))} (PyTorch {secs(float(r['torch_seconds']))})")
                else:
                    cells.append(secs(float(r["seconds"])))
            trows.append([f"`{model}`", batch] + cells)
        dev_table = table(header, trows)
    return name, table(["model", "runs", "1 thread s/epoch", "2 threads s/epoch", "speed-up"],
                       rows), dev_name, dev_table, "; ".join(f"{r[0]}: {r[4]}" for r in rows)


def read_csv_str(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def group(rows, keys):
    out = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def q6_best(raw, figures):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    rows = []
    best_model = None
    for model in ("seed", "seed-nopool", "lenet5"):
        s = raw.summary("best_" + model)
        e = raw.epochs("best_" + model)
        curves(ax, None, e, model, COLORS[model])
        acc, ep, t = best_epoch(e)
        ev = raw.json(f"best_{model}_eval.json")
        rows.append([f"`{model}`", s["optimizer"], s["lr"], pct(acc), ep, secs(t),
                     pct(ev["test_accuracy"]), secs(s["train_seconds"])])
        if best_model is None or ev["test_accuracy"] > best_model[1]:
            best_model = (model, ev["test_accuracy"], ev)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="each model's defaults")
    ax.set_ylim(bottom=max(90, ax.get_ylim()[0]))
    ax.legend()
    name = save(fig, figures, "q6_best_curves.png")

    model, acc, ev = best_model
    conf = ev["confusion"]
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    im = ax.imshow([[math.log10(1 + v) for v in row] for row in conf], cmap="Blues")
    for t in range(10):
        for p in range(10):
            v = conf[t][p]
            ax.text(p, t, str(v), ha="center", va="center", fontsize=7,
                    color="white" if t == p else "black")
    ax.set_xticks(range(10)), ax.set_yticks(range(10))
    ax.set(xlabel="predicted", ylabel="true digit",
           title=f"{model}: {pct(acc)} on the 10,000 test images")
    fig.colorbar(im, ax=ax, label="log10(1 + count)")
    conf_name = save(fig, figures, "q6_confusion.png")
    errors = sorted(((conf[t][p], t, p) for t in range(10) for p in range(10) if t != p),
                    reverse=True)[:3]
    text = ", ".join(f"{t} read as {p} ({n} times)" for n, t, p in errors)
    summary = "; ".join(f"{r[0]} {r[3]} (epoch {r[4]}, {r[5]} s of training)" for r in rows)
    return (name, conf_name), summary, table(
        ["model", "optimizer", "lr", "best test acc", "at epoch", "training s to that epoch",
         "final test acc (eval)", "training s (all epochs)"], rows), model, text


def inspection(raw, figures):
    j = raw.json("inspect_seed.json")
    layers = {l["name"]: l for l in j["layers"]}

    def planes(a):
        c, h, w = a["shape"]
        d = a["data"]
        return [[d[(k * h + y) * w:(k * h + y) * w + w] for y in range(h)] for k in range(c)]

    # Kernels: conv1's 3 (1x5x5) and conv2's 5x3 (3x3).
    k1 = next(k for k in j["kernels"] if k["name"] == "conv1.w")
    k2 = next(k for k in j["kernels"] if k["name"] == "conv2.w")
    fig, axes = plt.subplots(2, 5, figsize=(9, 3.8))
    for ax in axes.flat:
        ax.axis("off")
    o1, _, kh, kw = k1["shape"]
    for o in range(o1):
        d = k1["data"][o * kh * kw:(o + 1) * kh * kw]
        m = max(abs(v) for v in d)
        axes[0][o].imshow([d[y * kw:(y + 1) * kw] for y in range(kh)], cmap="RdBu_r", vmin=-m,
                          vmax=m)
        axes[0][o].set_title(f"conv1 map {o}", fontsize=8)
    o2, i2, kh2, kw2 = k2["shape"]
    for o in range(o2):
        # The 3 input channels of each conv2 kernel side by side.
        img = []
        for y in range(kh2):
            row = []
            for i in range(i2):
                base = ((o * i2 + i) * kh2 + y) * kw2
                row += k2["data"][base:base + kw2] + ([float("nan")] if i < i2 - 1 else [])
            img.append(row)
        m = max(abs(v) for v in k2["data"])
        axes[1][o].imshow(img, cmap="RdBu_r", vmin=-m, vmax=m)
        axes[1][o].set_title(f"conv2 map {o} (3 inputs)", fontsize=7)
    fig.suptitle("learned kernels of the seed model (red positive, blue negative)", fontsize=9)
    kernels_name = save(fig, figures, "kernels.png")

    order = ["conv1.relu", "pool1", "conv2.relu", "pool2"]
    fig = plt.figure(figsize=(11, 7))
    grid = fig.add_gridspec(5, 6)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(planes(j["image"])[0], cmap="gray_r")
    ax.set_title(f"test image {j['index']}: a {j['label']}", fontsize=8)
    ax.axis("off")
    for r, name in enumerate(order):
        for k, p in enumerate(planes(layers[name])):
            ax = fig.add_subplot(grid[r + 1 if r < 4 else 4, k])
            ax.imshow(p, cmap="viridis")
            ax.set_title(f"{name} [{k}]", fontsize=7)
            ax.axis("off")
    ax = fig.add_subplot(grid[0, 1:4])
    for name, color in (("fc1.relu", "tab:blue"), ("fc2.relu", "tab:orange")):
        d = layers[name]["data"]
        ax.bar(range(len(d)), d, color=color, alpha=0.7, label=name)
    ax.set_title("fully connected activations", fontsize=8)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[0, 4:6])
    ax.bar(range(10), j["probabilities"], color="tab:green")
    ax.set_xticks(range(10))
    ax.set_title(f"probabilities: predicts {j['predicted']}", fontsize=8)
    fig.suptitle("one test digit through the seed model (after each ReLU and pooling)", fontsize=9)
    maps_name = save(fig, figures, "feature_maps.png")
    return kernels_name, maps_name


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True)
    ap.add_argument("--figures", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--device-csv", default="",
                    help="thread scaling measured on a larger machine (scripts/scaling.sh CSV=)")
    args = ap.parse_args()
    raw = Raw(args.raw)
    os.makedirs(args.figures, exist_ok=True)
    machine = raw.json("machine.json")
    fig_rel = os.path.relpath(args.figures, os.path.dirname(os.path.abspath(args.doc)))
    raw_rel = os.path.relpath(args.raw, os.path.dirname(os.path.abspath(args.doc)))

    def img(name, alt):
        return f"![{alt}]({fig_rel}/{name})"

    f1, t1, x1 = q1_pooling(raw, args.figures)
    (f2a, f2b), x2, t2 = q2_batch(raw, args.figures)
    f3, t3, x3 = q3_init(raw, args.figures)
    f4, t4, x4 = q4_lr(raw, args.figures)
    f5, t5, f5d, t5d, x5 = q5_threads(raw, args.figures, machine, args.device_csv)
    (f6, f6c), s6, t6, best_model, x6 = q6_best(raw, args.figures)
    fk, fm = inspection(raw, args.figures)

    scope = ("**Quick mode** (a smoke test of the pipeline: 2,000 training images, one or two "
             "epochs; the figures mean little)." if machine["quick"] else
             "All runs on the full 60,000 training images, evaluated on the 10,000 test images "
             "after every epoch.")
    threads = machine["threads"]
    with open(raw.path("commands.txt")) as f:
        commands = f.read().strip()
    doc = f"""# Experiments

The study of the report this project grew from, finished with tbgrad: the same reference CNN
(`seed`: conv 5x5x3, avg-pool 4/2, conv 3x3x5, avg-pool 3/1, FC 245-100-64-10, ReLU,
Xavier-uniform init), its variant without pooling (`seed-nopool`) and LeNet-5 for comparison.

*Generated by `bash scripts/experiments.sh` (this file, the figures in `{fig_rel}/` and the raw
per-epoch CSVs, step-size summary and JSON summaries in `{raw_rel}/`; every command is listed in
`{raw_rel}/commands.txt`). Machine: {machine['cpu']}, {machine['cpus']} CPUs; {threads} threads
unless a table says otherwise; commit {machine['commit']}, {machine['date']}.* {scope}

Each run is `tbgrad-mnist train --data data/mnist --metrics raw/NAME.csv --json ...` with the
options shown; "seconds" are the trainer's own training time (no data loading or evaluation).
The same seed (1) everywhere unless stated, so runs differ only in what is compared.

## Headline findings

1. Pooling: {x1}
2. Batch size: {x2}.
3. Initialization: {x3}.
4. Learning rate and optimizer: {x4}
5. Threads (this machine, 1 to 2 threads, one epoch): {x5}.
6. Best accuracy each model reached with its defaults, and the training time to that epoch:
   {s6}.

## 1. Pooling or not

SGD, learning rate 0.1, constant, batch 32, the report's setting. Command:
`tbgrad-mnist train --model seed|seed-nopool --epochs N --optimizer sgd --lr 0.1 --schedule constant --threads {threads}`

{t1}

{x1}

{img(f1, "test accuracy and loss per epoch, seed vs seed-nopool")}

## 2. Minibatch or not

SGD with a constant learning rate at batch 1, 32 and 256, each at learning rates 0.1 (solid
lines) and 0.01 (dashed). Every step's weight change (the Euclidean norm of the change of all
weights together) is logged with `--step-log`. Command:
`tbgrad-mnist train --batch-size B --optimizer sgd --lr LR --schedule constant --step-log raw/steps/NAME.csv --threads {threads}`

{t2}

{img(f2a, "accuracy per epoch and per second of training, by batch size")}

{img(f2b, "step size and training loss over the first epoch, by batch size")}

The seconds of this table include the step log's own cost: to measure each step's weight
change the trainer copies all 32 thousand weights before every step, which at batch 1 (60,000
steps per epoch) is most of the epoch. Without `--step-log` an epoch at batch 1 takes 1.9 s on
this machine (docs/performance.md), so the "per second" column understates batch 1 the most.

"Median loss change" is the median absolute difference between consecutive steps' training
losses in epoch 1: how jagged the loss curve is. The step-size figure bins epoch 1 into 100
slices of the training set (x: images seen) and shows, per slice, the median step's weight
change with its 10-90% band, and the mean loss (`{raw_rel}/step_size_summary.csv`).

## 3. Initialization

Xavier-uniform (the report's) against U(-1, 1) (`--init uniform`) and N(0, 1)
(`--init normal`), SGD 0.1, over several seeds (`--seed`). A run is "stuck" when its final test
accuracy is below 20% (chance is 10%). Command:
`tbgrad-mnist train --init xavier|uniform|normal --seed S --optimizer sgd --lr 0.1 --schedule constant --threads {threads}`

{t3}

{x3}.

{img(f3, "test accuracy per epoch for each seed, by initializer")}

## 4. Learning rate and optimizer

`seed`, batch 32, cosine schedule (from the learning rate towards 0 over the run). Command:
`tbgrad-mnist train --optimizer OPT --lr LR --threads {threads}`

{t4}

{x4}

{img(f4, "final test accuracy against learning rate per optimizer, and learning curves")}

## 5. Threads

One epoch, SGD 0.1, batch 32, on 1 and 2 threads of this machine, medians of the repetitions
(runs alternate between thread counts). Results are bit-identical for every thread count
(docs/reliability.md), so only the time changes. Command:
`tbgrad-mnist train --model M --epochs 1 --optimizer sgd --lr 0.1 --schedule constant --threads T`

{t5}

{img(f5, "seconds per epoch at 1 and 2 threads")}
"""
    if f5d:
        doc += f"""
On a 16-core server (Intel Xeon with AVX-512, 1 thread per core: the machine lent to this
project for scaling runs; `CSV=... bash scripts/scaling.sh BIN DATA 1 2 4 8 16` with the
binaries of `scripts/pack_bins.sh`; medians of 3 runs for `seed`, one run for `seed-nopool`; raw figures in
`{os.path.relpath(args.device_csv, os.path.dirname(os.path.abspath(args.doc)))}`), seconds per epoch
(PyTorch 2.11 on the same machine, one run each, in brackets):

{t5d}

{img(f5d, "seconds per epoch against threads on a 16-core server")}
"""
    else:
        doc += "\nNo larger machine's figures were given to this run (`--device-csv`).\n"
    doc += f"""
## 6. Our best

Each model with its defaults (what `tbgrad-mnist train --model M` does: Adam for `seed` and
`lenet5`, momentum for `seed-nopool`, cosine schedule, batch 32, Xavier-uniform). Command:
`tbgrad-mnist train --model M --epochs N --save raw/best_M.ckpt --threads {threads}`, then
`tbgrad-mnist eval --load raw/best_M.ckpt --json` for the confusion matrix.

{t6}

{img(f6, "test accuracy per epoch of each model with its defaults")}

The confusion matrix of the most accurate model ({best_model}); its most frequent mistakes:
{x6}.

{img(f6c, "confusion matrix of the best model")}

What the reference CNN learned, and one test digit through it
(`tbgrad-mnist inspect --load raw/best_seed.ckpt --index 0 --out raw/inspect_seed.json`):

{img(fk, "learned convolution kernels")}

{img(fm, "feature maps of one test digit at each layer")}

## Commands of this run

```
{commands}
```
"""
    with open(args.doc + ".tmp", "w") as f:
        f.write(doc)
    os.replace(args.doc + ".tmp", args.doc)


if __name__ == "__main__":
    main()
