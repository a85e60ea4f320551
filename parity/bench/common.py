"""What both workers run: the workloads' sizes, the command-line options and the output."""

from __future__ import annotations

import argparse
import json
import os
import sys

N, D_IN, H, D_OUT = 64, 1000, 100, 10  # "Learning PyTorch with examples"
LENET_BATCHES = (1, 64, 256)
LOOP_STEPS = 500  # the tutorials' loops
LOOP_IMAGES = 16384
"""At most this many images (64 MB) in the distinct batches LeNet's rows cycle through, on both sides."""
DP_WORKLOAD, DP_IMPL = "lenet_train_dp", "jaxnets-dp"
"""The data-parallel section's rows: LeNet's train step on ``Trainer(mesh=jaxnets.distributed.mesh(n))``."""
DP_BATCH = 256  # global batch, split evenly over the devices
DYNAMIC_STEPS = 500
"""Length of the one sequence of DynamicNet depths both workers step through (:func:`dynamic_depths`)."""
PORT_BATCH = 32
"""Batch of the ported models' train steps (issue #18): ResNet-18 on CIFAR-sized images, the Transformer encoder."""
RESNET = {"num_classes": 10, "image": (3, 32, 32)}
"""torchvision's ``resnet18(num_classes=10)`` on 3x32x32 images (CIFAR-10's shape), BatchNorm in train mode."""
TRANSFORMER = {"ntoken": 1000, "d_model": 128, "nhead": 4, "d_hid": 512, "nlayers": 2, "nclass": 10,
               "dropout": 0.1, "max_len": 64}  # fmt: skip
"""``TransformerClassifier(**TRANSFORMER)``, the ``nn.TransformerEncoder`` classifier's step: 2 layers, d_model 128
(4 heads, feed-forward 512, torch's default dropout 0.1), sequences of ``max_len`` = 64 tokens from 1000, a padding
mask (lengths 32 to 64), 10 classes."""
PORT_OPTIMIZER = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
"""SGD of both ported models' rows, on both sides: momentum 0.9 and weight decay 5e-4, the CIFAR ResNet recipe
(and the optimizer of ResNet-18's trajectory row in ``python -m parity``)."""
PORT_WORKLOADS = ("resnet18_train", "transformer_train")


def worker_args(prog: str, *, data_parallel: bool = False) -> argparse.Namespace:
    """The worker's command line; ``data_parallel`` adds ``--dp N`` (the JAX worker's data-parallel mode)."""
    parser = argparse.ArgumentParser(prog=prog, description="One framework's half of parity.bench.")
    parser.add_argument("--quick", action="store_true", help="few repeats, short loops, no torch.compile")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads")
    parser.add_argument("--only", default="", help="run only workloads whose name contains this")
    if data_parallel:
        parser.add_argument(
            "--dp",
            type=int,
            metavar="N",
            help=f"run only {DP_WORKLOAD}, data-parallel over the first N devices (on a CPU, start the worker "
            "with XLA_FLAGS=--xla_force_host_platform_device_count=N to simulate them)",
        )
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}")
    if getattr(args, "dp", None) is not None and args.dp < 1:
        parser.error(f"--dp must be at least 1 device; got {args.dp}")
    return args


def settings(quick: bool) -> dict:
    """Repeats and loop lengths: ``--quick`` is a smoke run, not a measurement."""
    if quick:
        return {"repeats": 3, "inner": 3, "loop_steps": 20, "gemm_n": 512, "dp_batch": 64}
    return {"repeats": 7, "inner": 20, "loop_steps": LOOP_STEPS, "gemm_n": 1024, "dp_batch": DP_BATCH}


def lenet_batches(batch: int, loop_steps: int) -> int:
    """Distinct batches LeNet's rows step through at ``batch`` images: up to LOOP_IMAGES images, at least 4.

    Every framework's LeNet step takes a new batch each step, as real training
    does: with one batch for every step, XLA hoists the image-only work out of a
    compiled loop (which PyTorch's eager loop cannot do), and either side would
    read its images from cache.
    """
    return min(loop_steps, max(4, LOOP_IMAGES // batch))


def lenet_data(batch: int, steps: int) -> tuple:
    """The distinct NumPy batches LeNet's rows step through, the same arrays in both workers.

    ``(images (steps, batch, 32, 32, 1) float32, labels (steps, batch) int64)``,
    channels-last (the torch worker transposes its copy to channels-first),
    drawn once from a seed fixed per batch size, before any clock starts, as
    :func:`port_batches` are.
    """
    import numpy as np

    r = np.random.default_rng(batch)
    return r.standard_normal((steps, batch, 32, 32, 1), np.float32), r.integers(0, 10, (steps, batch))


def dynamic_depths() -> list[int]:
    """The depths (0 to 3, as the seed's ``random.randint(0, 3)``) of DynamicNet's steps, the same in both workers.

    Drawn once with NumPy from a fixed seed, before any clock starts: both
    frameworks' rows step through this one sequence in the same order, so
    both do the same work (a depth-3 step costs three times the middle layer
    of a depth-1 step).
    """
    import numpy as np

    return [int(d) for d in np.random.default_rng(0).integers(0, 4, DYNAMIC_STEPS)]


def port_batches(workload: str, quick: bool) -> list[tuple]:
    """The distinct NumPy batches a ported model's rows step through, the same arrays in both workers.

    Drawn once from a fixed seed, before any clock starts, as DynamicNet's
    depths are: each side converts them to its own arrays and steps through
    them in the same order, a new batch every step. ``resnet18_train``:
    ``(images (B, 3, 32, 32) float32, labels (B,))``; ``transformer_train``:
    ``(tokens (S, B), padding mask (B, S) True at padding, labels (B,))``,
    tokens seq-first as ``nn.TransformerEncoder``'s default. Integers are
    int64 (torch's embedding and cross-entropy take them; the JAX worker casts
    to int32). 16 batches (4 with ``--quick``): 6 MB of ResNet images, beyond
    the CPU's per-core caches.
    """
    import numpy as np

    r = np.random.default_rng(PORT_WORKLOADS.index(workload) + 1)
    out = []
    for _ in range(4 if quick else 16):
        labels = r.integers(0, 10, PORT_BATCH)
        if workload == "resnet18_train":
            out.append((r.standard_normal((PORT_BATCH, *RESNET["image"]), np.float32), labels))
            continue
        seq = TRANSFORMER["max_len"]
        lengths = r.integers(seq // 2, seq + 1, PORT_BATCH)
        mask = np.arange(seq)[None, :] >= lengths[:, None]
        out.append((r.integers(0, TRANSFORMER["ntoken"], (seq, PORT_BATCH)), mask, labels))
    return out


def port_inner(quick: bool) -> int:
    """Steps per timed call of the ported models' rows: 5 (a step takes tens of ms); 1 with ``--quick``."""
    return 1 if quick else 5


def lenet_parts(batch: int) -> int:
    """Parts ``jaxnets.Trainer`` splits a LeNet batch into by itself (``microbatches=None``), by its own rule.

    The torch worker's ``torch-accum`` row accumulates the gradient over the
    same parts; the JAX worker reports the parts its trainer chose, and the
    tests check that they agree.
    """
    from jaxnets import _split
    from jaxnets.models._fastconv import CHUNK

    return _split.parts(batch, CHUNK)


class Cycle:
    """The next item of ``items`` at every call, cycling; one position shared by every timed call of a row.

    Both workers take their per-step batches (LeNet's images, DynamicNet's
    depths) from one of these, prepared before the clock starts, so every
    timed call of a row continues where the last one stopped and both sides
    step through the same sequence in the same order.
    """

    def __init__(self, items):
        self.items, self.i = list(items), -1

    def __call__(self):
        self.i = (self.i + 1) % len(self.items)
        return self.items[self.i]


def threads_per_device(threads: int, devices: int) -> int:
    """Intra-op threads each of ``devices`` devices gets when they share ``threads`` threads (at least 1).

    XLA:CPU gives all the devices of a process one intra-op thread pool, of
    ``PJRT_NPROC`` threads but never fewer than the devices (every device's
    program must be running for their all-reduce to meet). The data-parallel
    rows therefore all get the same ``threads`` in total: up to ``threads``
    devices split them, and beyond that each device has one thread and the
    devices take turns on the cores. One op spreads over several threads
    (``--xla_cpu_multi_thread_eigen``) only when its device has more than one.
    """
    return max(1, threads // devices)


def row(workload: str, batch: int, impl: str, timing: dict, **extra) -> dict:
    return {
        "workload": workload,
        "batch": batch,
        "impl": impl,
        "median_us": timing["median_us"],
        "min_us": timing["min_us"],
        "max_us": timing["max_us"],
        "repeats": timing["repeats"],
        "flops": extra.pop("flops", None),
        "compile_s": extra.pop("compile_s", None),
        "compiles": extra.pop("compiles", None),
        "kernels_per_step": extra.pop("kernels_per_step", None),
        **extra,
    }


def emit(result: dict) -> None:
    """The worker's output: one JSON document on the last line of stdout."""
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


TORCH_ENV = {"JAXNETS_MALLOC": "0"}
"""Environment of every torch process of the benchmark: they import jaxnets (for data and reference code), whose
import tunes glibc's malloc (``jaxnets.malloc_setting()`` says how); torch runs with glibc's defaults, as a torch
user's does."""
