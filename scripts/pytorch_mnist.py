#!/usr/bin/env python3
"""Trains tbgrad's MNIST models in PyTorch, for scripts/bench_epoch.sh's comparison.

Same network, initialisation (Xavier-uniform weights and zero biases; He-normal for resnet),
data ([0, 1] floats from the raw idx files), batch size (the last partial batch included),
optimizer, learning rate and its schedule, and thread count as `tbgrad-mnist train`; the images
stay uint8 and each batch is converted when it is used, as tbgrad does. Prints one JSON line:
train_seconds (the epochs' training loops only, augmentation included: no data loading, no
evaluation), test accuracy, and per_epoch (each epoch's seconds, train loss and accuracy, test
accuracy, and the learning rate of its first and last step).

    python3 scripts/pytorch_mnist.py --model seed --batch-size 32 --lr 0.1 --threads 2
    python3 scripts/pytorch_mnist.py --data /usr/share/datasets/fashion-mnist --model resnet \
        --optimizer momentum --weight-decay 5e-4 --schedule cosine --warmup-epochs 1 --augment \
        --lr 0.05 --epochs 15

The defaults (--optimizer sgd --weight-decay 0 --schedule constant --warmup-epochs 0, no
--augment) train as this script always has.

Models: seed, seed-nopool, lenet5 (nn/models.cpp's, layer for layer) and resnet: a conv 3x3
1 -> 16 stem (no bias) -> BN -> ReLU; three stages of two residual blocks of 16, 32 and 64
channels, the first block of stages 2 and 3 with stride 2 (28 -> 14 -> 7); a block is conv 3x3
(stride s) -> BN -> ReLU -> conv 3x3 -> BN, plus the skip (x itself, or conv 1x1 stride s -> BN
where channels or stride change), then ReLU; global average pooling -> [B, 64]; dropout 0.1;
linear 64 -> 10. Convolutions have no bias; BN eps 1e-5, momentum 0.1 (PyTorch's running
statistics: running = 0.9 running + 0.1 batch, the batch variance unbiased). Init: conv and
linear weights He normal, N(0, 2 / fan_in) (kaiming_normal_, fan_in, relu), linear bias 0, BN
weight 1 and bias 0. net.train() while training (batch statistics, dropout), net.eval() for the
test set (running statistics, no dropout).

Optimizer (torch.optim.SGD, dampening 0, no Nesterov): --optimizer sgd: p -= lr * g;
--optimizer momentum: v = 0.9 v + g (v starts at 0), p -= lr * v. --weight-decay WD (L2, added
to the gradient before the momentum: g = grad + WD * p) applies only to parameters of rank >= 2
(conv and linear weights), not to biases or BN weights and biases.

Learning rate, set before every step. Let S = ceil(N / B) steps per epoch (N training images
after --limit, B the batch size), T = E * S the run's steps (E = --epochs), Wn = W * S the
warmup steps (W = --warmup-epochs, 0 <= W <= E), and k = 0, 1, ..., T - 1 the step's index
counted from the run's first step. Then, in double precision:
    k <  Wn:                    lr_k = lr * (k + 1) / Wn        (lr / Wn, 2 lr / Wn, ..., lr)
    k >= Wn, constant schedule: lr_k = lr
    k >= Wn, cosine schedule:   lr_k = lr * 0.5 * (1 + cos(pi * (k - Wn) / (T - Wn)))
so the cosine starts at lr on step Wn and would reach 0 at step T (the last step, T - 1, gets
lr * 0.5 * (1 + cos(pi * (T - Wn - 1) / (T - Wn))), just above 0). The optimizer uses lr_k as
a float; torch.optim.SGD multiplies in float32 for float32 parameters.

--augment, per training example, fresh for every batch of every epoch: zero-pad the 28x28 image
by 2 on each side (32x32), take the 28x28 crop whose top-left corner is (dy, dx), dy and dx
uniform integers in [0, 4] (a shift of -2 .. +2 pixels), then flip it left-right with
probability 0.5: out[i][j] = padded[dy + i][dx + j], or padded[dy + i][dx + 27 - j] when
flipped. Done on the batch's uint8 tensor in torch, vectorised (one gather), with a
torch.Generator seeded with --seed (draws per batch: dy for all rows, then dx, then the flips);
the test set is never augmented. The shuffle is numpy's default_rng(--seed) permutation per
epoch, as before.

Run it with Debian's interpreter (/usr/bin/python3) and its python3-torch; set
OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 first on an AVX-512 CPU that OpenBLAS
0.3.21 does not know (bench_epoch.sh does).
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    """An idx file (raw or gzip-compressed, by its name's .gz) as a numpy uint8 array of its
    declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        sys.exit(f"pytorch_mnist.py: {path}: not an unsigned-byte idx file")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(dims)):
        sys.exit(f"pytorch_mnist.py: {path}: header says {dims}, body has {body.size} bytes")
    return body.reshape(dims)


def find_idx(data_dir, prefix, kind, rank):
    """The file of one split's images or labels in an MNIST-layout folder: the original names
    (train-images-idx3-ubyte, as LeCun's site, Fashion-MNIST and Debian's dataset-fashion-mnist
    ship them) or the dotted ones some mirrors use (train-images.idx3-ubyte), each raw or .gz;
    the raw file first, as tbgrad does."""
    tried = []
    for name in (f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"):
        for candidate in (name, name + ".gz"):
            path = os.path.join(data_dir, candidate)
            if os.path.exists(path):
                return path
            tried.append(candidate)
    sys.exit(f"pytorch_mnist.py: {data_dir}: none of {', '.join(tried)}")


def load(data_dir, split, limit=0):
    if not os.path.isdir(data_dir):
        sys.exit(f"pytorch_mnist.py: --data {data_dir}: no such folder")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(find_idx(data_dir, prefix, "images", 3))
    labels = read_idx(find_idx(data_dir, prefix, "labels", 1))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        sys.exit(f"pytorch_mnist.py: {data_dir}: {split} images {list(images.shape)} and labels "
                 f"{list(labels.shape)}: expected [N, 28, 28] and [N]")
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    return np.ascontiguousarray(images), labels.astype(np.int64)


def batch_norm(channels):
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class Block(nn.Module):
    """A residual block: conv 3x3 (stride) -> BN -> ReLU -> conv 3x3 -> BN, plus the skip (x, or
    conv 1x1 (stride) -> BN where channels or stride change), then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = batch_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = batch_norm(cout)
        self.project = None
        if cin != cout or stride != 1:
            self.project = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                         batch_norm(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (x if self.project is None else self.project(x)))


class Net(nn.Module):
    """nn/models.cpp's networks, layer for layer."""

    MODELS = ("seed", "seed-nopool", "lenet5", "resnet")

    def __init__(self, model):
        super().__init__()
        self.model = model
        if model in ("seed", "seed-nopool"):
            self.pool = model == "seed"
            self.conv1 = nn.Conv2d(1, 3, 5)   # [B, 3, 24, 24]
            self.conv2 = nn.Conv2d(3, 5, 3)   # [B, 5, 9, 9] after the pool, else 22x22
            flat = 5 * 7 * 7 if self.pool else 5 * 22 * 22  # 245 / 2420
            self.fc1, self.fc2, self.fc3 = nn.Linear(flat, 100), nn.Linear(100, 64), nn.Linear(64, 10)
        elif model == "lenet5":
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
        elif model == "resnet":
            self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)   # [B, 16, 28, 28]
            self.stem_bn = batch_norm(16)
            self.blocks = nn.Sequential(
                Block(16, 16, 1), Block(16, 16, 1),                   # [B, 16, 28, 28]
                Block(16, 32, 2), Block(32, 32, 1),                   # [B, 32, 14, 14]
                Block(32, 64, 2), Block(64, 64, 1))                   # [B, 64, 7, 7]
            self.dropout = nn.Dropout(p=0.1)
            self.fc = nn.Linear(64, 10)
        else:
            sys.exit(f"pytorch_mnist.py: --model must be {', '.join(self.MODELS[:-1])} or "
                     f"{self.MODELS[-1]}, got '{model}'")
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if model == "resnet":
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        if self.model == "resnet":
            h = F.relu(self.stem_bn(self.stem(x)))
            h = self.blocks(h)
            h = h.mean(dim=(2, 3))                                    # global average pool
            return self.fc(self.dropout(h))
        if self.model == "lenet5":
            h = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
            h = F.max_pool2d(F.relu(self.conv2(h)), 2, 2)
        else:
            h = F.relu(self.conv1(x))
            if self.pool:
                h = F.avg_pool2d(h, 4, 2)
            h = F.relu(self.conv2(h))
            if self.pool:
                h = F.avg_pool2d(h, 3, 1)
        h = torch.flatten(h, 1)
        h = F.relu(self.fc1(h))
        h = F.relu(self.fc2(h))
        return self.fc3(h)


def to_batch(images, labels, idx, generator=None):
    """Batch `idx` as [B, 1, 28, 28] floats in [0, 1] and [B] labels; augmented (see the
    docstring) when a generator is given."""
    x = torch.from_numpy(images[idx])
    if generator is not None:
        x = augment(x, generator)
    return x.unsqueeze(1).float().div_(255.0), torch.from_numpy(labels[idx])


def augment(x, generator, pad=2):
    """Random crop with zero padding, then a random left-right flip, of a [B, H, W] uint8 batch,
    in one gather: out[b, i, j] = padded[b, dy[b] + i, dx[b] + (W - 1 - j if flip[b] else j)]."""
    b, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))                           # [B, H + 2 pad, W + 2 pad]
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.randint(0, 2, (b,), generator=generator).bool()
    i, j = torch.arange(h), torch.arange(w)
    rows = dy[:, None] + i                                            # [B, H]
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - j, j)     # [B, W]
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def scheduled_lr(k, lr, schedule, warmup_steps, total_steps):
    """Step k's learning rate (k = 0 .. total_steps - 1), the docstring's formula."""
    if k < warmup_steps:
        return lr * (k + 1) / warmup_steps
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * (k - warmup_steps) / (total_steps - warmup_steps)))


def make_optimizer(net, kind, lr, weight_decay):
    """torch.optim.SGD, with momentum 0.9 for "momentum"; weight decay on rank >= 2 only."""
    momentum = 0.9 if kind == "momentum" else 0.0
    if weight_decay == 0:
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    decay = [q for q in net.parameters() if q.dim() >= 2]
    rest = [q for q in net.parameters() if q.dim() < 2]
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": rest, "weight_decay": 0.0}], lr=lr, momentum=momentum)


def evaluate(net, images, labels, batch=1000):
    net.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            idx = np.arange(start, min(start + batch, len(labels)))
            x, y = to_batch(images, labels, idx)
            logits = net(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    net.train()
    return loss_sum / len(labels), correct / len(labels)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="The learning rate of each step, the optimizer and the "
                                       "augmentation are defined in this script's docstring.")
    p.add_argument("--data", default="data/mnist",
                   help="MNIST-layout folder: the four idx files, raw or .gz, named "
                        "train-images-idx3-ubyte etc. or train-images.idx3-ubyte etc. "
                        "(e.g. /usr/share/datasets/fashion-mnist)")
    p.add_argument("--model", default="seed", help=" | ".join(Net.MODELS))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1, help="base learning rate")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "momentum"),
                   help="torch.optim.SGD without momentum (sgd) or with momentum 0.9")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="L2 weight decay on parameters of rank >= 2 (not biases or BN)")
    p.add_argument("--schedule", default="constant", choices=("constant", "cosine"),
                   help="learning rate after the warmup, set every step")
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="linear warmup over the first W epochs' steps (0 <= W <= --epochs)")
    p.add_argument("--augment", action="store_true",
                   help="random 28x28 crop of the image zero-padded by 2, then a left-right "
                        "flip with probability 0.5, per training example")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="train on the first N images only (0: all)")
    p.add_argument("--no-mkldnn", action="store_true",
                   help="torch.backends.mkldnn.enabled = False (convolutions without oneDNN)")
    args = p.parse_args()
    if args.batch_size < 1 or args.threads < 1 or args.epochs < 0 or args.lr <= 0:
        sys.exit("pytorch_mnist.py: --batch-size and --threads must be >= 1, --lr > 0, --epochs >= 0")
    if not 0 <= args.warmup_epochs <= args.epochs:
        sys.exit("pytorch_mnist.py: --warmup-epochs must be between 0 and --epochs")
    if not args.weight_decay >= 0:
        sys.exit("pytorch_mnist.py: --weight-decay must be >= 0")

    torch.set_num_threads(args.threads)
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    augment_gen = torch.Generator().manual_seed(args.seed) if args.augment else None
    train_x, train_y = load(args.data, "train", args.limit)
    test_x, test_y = load(args.data, "test")

    net = Net(args.model)
    opt = make_optimizer(net, args.optimizer, args.lr, args.weight_decay)
    n, b = len(train_y), args.batch_size
    steps_per_epoch = (n + b - 1) // b
    total_steps, warmup_steps = args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch
    train_seconds, epochs, step = 0.0, [], 0
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(n)
        net.train()
        t0 = time.perf_counter()
        loss_sum, correct, lr_first = 0.0, 0, None
        for start in range(0, n, b):
            lr = scheduled_lr(step, args.lr, args.schedule, warmup_steps, total_steps)
            lr_first = lr if lr_first is None else lr_first
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = to_batch(train_x, train_y, order[start:start + b], augment_gen)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            # What tbgrad's loop also does each step: read the loss and count correct rows.
            loss_sum += loss.item() * len(y)
            correct += (logits.detach().argmax(1) == y).sum().item()
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        test_loss, test_acc = evaluate(net, test_x, test_y)
        epochs.append({"epoch": epoch, "seconds": seconds, "train_loss": loss_sum / n,
                       "train_accuracy": correct / n, "test_loss": test_loss,
                       "test_accuracy": test_acc, "lr_first": lr_first, "lr_last": lr})
        print(f"epoch {epoch}: {seconds:.2f} s, lr {lr_first:.6g} -> {lr:.6g}, train loss "
              f"{loss_sum / n:.4f}, test accuracy {100 * test_acc:.2f}%", file=sys.stderr)
    test_loss, test_acc = evaluate(net, test_x, test_y) if not epochs else (test_loss, test_acc)
    print(json.dumps({
        "framework": "pytorch", "torch": torch.__version__, "model": args.model,
        "data": args.data, "epochs": args.epochs, "batch_size": b, "optimizer": args.optimizer,
        "momentum": opt.param_groups[0]["momentum"], "lr": args.lr,
        "weight_decay": args.weight_decay, "schedule": args.schedule,
        "warmup_epochs": args.warmup_epochs, "augment": args.augment,
        "steps_per_epoch": steps_per_epoch,
        "parameters": sum(q.numel() for q in net.parameters()),
        "threads": torch.get_num_threads(), "seed": args.seed, "train_images": n,
        "train_seconds": train_seconds,
        "images_per_second": n * args.epochs / train_seconds if train_seconds > 0 else 0,
        "test_accuracy": test_acc, "test_loss": test_loss,
        "per_epoch": epochs,
        "mkldnn": torch.backends.mkldnn.enabled,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", ""),
    }))


if __name__ == "__main__":
    main()
