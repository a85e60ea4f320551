"""What both workers run: the workloads' sizes, the command-line options and the output."""

from __future__ import annotations

import argparse
import json
import os
import sys

N, D_IN, H, D_OUT = 64, 1000, 100, 10  # "Learning PyTorch with examples"
LENET_BATCHES = (1, 64, 256)
LOOP_STEPS = 500  # the tutorials' loops


def worker_args(prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description="One framework's half of parity.bench.")
    parser.add_argument("--quick", action="store_true", help="few repeats, short loops, no torch.compile")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads")
    parser.add_argument("--only", default="", help="run only workloads whose name contains this")
    return parser.parse_args()


def settings(quick: bool) -> dict:
    """Repeats and loop lengths: ``--quick`` is a smoke run, not a measurement."""
    if quick:
        return {"repeats": 3, "inner": 3, "loop_steps": 20, "gemm_n": 512}
    return {"repeats": 7, "inner": 20, "loop_steps": LOOP_STEPS, "gemm_n": 1024}


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
