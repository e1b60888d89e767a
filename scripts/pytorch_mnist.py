#!/usr/bin/env python3
"""Trains tbgrad's MNIST models in PyTorch, for scripts/bench_epoch.sh's comparison.

Same network, initialisation (Xavier-uniform weights, zero biases), data ([0, 1] floats from
the raw idx files), batch size (the last partial batch included), optimizer (plain SGD),
learning rate and thread count as `tbgrad-mnist train`; the images stay uint8 and each batch is
converted when it is used, as tbgrad does. Prints one JSON line:
train_seconds (the epochs' training loops only: no data loading, no evaluation), test accuracy.

    python3 scripts/pytorch_mnist.py --model seed --batch-size 32 --lr 0.1 --threads 2

Run it with Debian's interpreter (/usr/bin/python3) and its python3-torch; set
OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 first on an AVX-512 CPU that OpenBLAS
0.3.21 does not know (bench_epoch.sh does).
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    """An idx file (raw or .gz) as a numpy uint8 array of its declared shape."""
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate):
            opener = gzip.open if candidate.endswith(".gz") else open
            with opener(candidate, "rb") as f:
                data = f.read()
            break
    else:
        sys.exit(f"pytorch_mnist.py: {path}: no such file (nor {path}.gz)")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        sys.exit(f"pytorch_mnist.py: {candidate}: not an unsigned-byte idx file")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(dims)):
        sys.exit(f"pytorch_mnist.py: {candidate}: header says {dims}, body has {body.size} bytes")
    return body.reshape(dims)


def load(data_dir, split, limit=0):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte"))
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    return np.ascontiguousarray(images), labels.astype(np.int64)


class Net(nn.Module):
    """nn/models.cpp's networks, layer for layer."""

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
        else:
            sys.exit(f"pytorch_mnist.py: --model must be seed, seed-nopool or lenet5, got '{model}'")
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
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


def to_batch(images, labels, idx):
    x = torch.from_numpy(images[idx]).unsqueeze(1).float().div_(255.0)
    return x, torch.from_numpy(labels[idx])


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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/mnist", help="folder with the four idx files (raw or .gz)")
    p.add_argument("--model", default="seed", help="seed | seed-nopool | lenet5")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="train on the first N images only (0: all)")
    p.add_argument("--no-mkldnn", action="store_true",
                   help="torch.backends.mkldnn.enabled = False (convolutions without oneDNN)")
    args = p.parse_args()
    if args.batch_size < 1 or args.threads < 1 or args.epochs < 0 or args.lr <= 0:
        sys.exit("pytorch_mnist.py: --batch-size and --threads must be >= 1, --lr > 0, --epochs >= 0")

    torch.set_num_threads(args.threads)
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train_x, train_y = load(args.data, "train", args.limit)
    test_x, test_y = load(args.data, "test")

    net = Net(args.model)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr)
    n, b = len(train_y), args.batch_size
    train_seconds, epochs = 0.0, []
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(n)
        t0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for start in range(0, n, b):
            x, y = to_batch(train_x, train_y, order[start:start + b])
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # What tbgrad's loop also does each step: read the loss and count correct rows.
            loss_sum += loss.item() * len(y)
            correct += (logits.detach().argmax(1) == y).sum().item()
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        test_loss, test_acc = evaluate(net, test_x, test_y)
        epochs.append({"epoch": epoch, "seconds": seconds, "train_loss": loss_sum / n,
                       "train_accuracy": correct / n, "test_accuracy": test_acc})
        print(f"epoch {epoch}: {seconds:.2f} s, train loss {loss_sum / n:.4f}, "
              f"test accuracy {100 * test_acc:.2f}%", file=sys.stderr)
    test_loss, test_acc = evaluate(net, test_x, test_y) if not epochs else (test_loss, test_acc)
    print(json.dumps({
        "framework": "pytorch", "torch": torch.__version__, "model": args.model,
        "epochs": args.epochs, "batch_size": b, "optimizer": "sgd", "lr": args.lr,
        "threads": torch.get_num_threads(), "seed": args.seed, "train_images": n,
        "train_seconds": train_seconds,
        "images_per_second": n * args.epochs / train_seconds if train_seconds > 0 else 0,
        "test_accuracy": test_acc, "test_loss": test_loss,
        "mkldnn": torch.backends.mkldnn.enabled,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", ""),
    }))


if __name__ == "__main__":
    main()
