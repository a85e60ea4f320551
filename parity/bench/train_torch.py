"""``jaxnets train``'s default job as a plain PyTorch eager script: the yardstick of the end-to-end benchmark.

What a PyTorch user would write for it, in the style of pytorch/examples'
``mnist/main.py``: the seed's ``Net`` (:class:`parity.torch_models.Net`), the
same digits and the same train/test split (:func:`jaxnets.data.load`, NumPy
only: it loads no JAX), Adam with lr 1e-3, batches of 32 in a new random order
every epoch with the last incomplete batch dropped (as ``jaxnets train``
does), a test evaluation after every epoch, 40 epochs, a log line at the first
step and per epoch, and the final weights saved with ``--save``. Torch keeps
its own defaults (threads, eager mode). No checkpoint per epoch, no metrics
file and no curves: ``jaxnets train`` writes all three, so the comparison
favours this script.

Run: ``python -m parity.bench.train_torch [--epochs 40] [--save net.pt]``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from jaxnets.training import data
from parity.torch_models import Net


def train(net, optimizer, images, labels, batch_size, generator, epoch, log_first):
    net.train()
    order = torch.randperm(len(labels), generator=generator)
    total_loss, correct, steps = 0.0, 0, len(labels) // batch_size  # drop_last
    for i in range(steps):
        idx = order[i * batch_size : (i + 1) * batch_size]
        x, y = images[idx], labels[idx]
        optimizer.zero_grad()
        output = net(x)
        loss = F.cross_entropy(output, y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        correct += (output.argmax(1) == y).sum().item()
        if log_first and i == 0:
            print(f"Train Epoch: {epoch} [0/{len(labels)}]\tLoss: {loss.item():.6f}", flush=True)
    return total_loss / steps, correct / (steps * batch_size)


def test(net, images, labels):
    net.eval()
    with torch.no_grad():
        output = net(images)
        loss = F.cross_entropy(output, labels).item()
        correct = (output.argmax(1) == labels).sum().item()
    return loss, correct


def parser() -> argparse.ArgumentParser:
    """The script's options; their defaults are ``jaxnets train``'s job (tests/test_bench_e2e.py checks)."""
    p = argparse.ArgumentParser(description="LeNet on scikit-learn's digits with PyTorch (jaxnets train's job)")
    p.add_argument("--epochs", type=int, default=40, help="passes over the training set (default: 40)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default: 0.001)")
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order (default: 0)")
    p.add_argument("--save", metavar="FILE", help="save the final state_dict here (default: not saved)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    train_set, test_set = data.load("digits")
    # (N, H, W, C) -> (N, C, H, W): torch's convolutions take channels first.
    x_train = torch.from_numpy(train_set.images.transpose(0, 3, 1, 2).copy())
    y_train = torch.from_numpy(train_set.labels.astype("int64"))
    x_test = torch.from_numpy(test_set.images.transpose(0, 3, 1, 2).copy())
    y_test = torch.from_numpy(test_set.labels.astype("int64"))
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss, acc = train(net, optimizer, x_train, y_train, args.batch_size, generator, epoch, log_first=epoch == 1)
        test_loss, correct = test(net, x_test, y_test)
        print(
            f"epoch {epoch:>3}/{args.epochs}  loss {loss:.4f}  train acc {100 * acc:5.1f}%  test loss "
            f"{test_loss:.4f}  test acc {100 * correct / len(y_test):5.1f}%  ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    print(
        f"test accuracy {100 * correct / len(y_test):.2f}% ({correct}/{len(y_test)}) after {args.epochs} epochs, "
        f"{time.perf_counter() - start:.1f} s after the imports",
        flush=True,
    )
    if args.save:
        torch.save(net.state_dict(), args.save)


if __name__ == "__main__":
    main()
