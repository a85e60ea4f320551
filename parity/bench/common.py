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


def dynamic_depths() -> list[int]:
    """The depths (0 to 3, as the seed's ``random.randint(0, 3)``) of DynamicNet's steps, the same in both workers.

    Drawn once with NumPy from a fixed seed, before any clock starts: both
    frameworks' rows step through this one sequence in the same order, so
    both do the same work (a depth-3 step costs three times the middle layer
    of a depth-1 step).
    """
    import numpy as np

    return [int(d) for d in np.random.default_rng(0).integers(0, 4, DYNAMIC_STEPS)]


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
