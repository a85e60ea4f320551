"""Timing shared by the benchmark workers: warm-up, repeats, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def measure(run: Callable[[], object], sync: Callable[[object], object], *, steps: int, repeats: int) -> dict:
    """Median and spread of the time per step of ``run``, which performs ``steps`` steps per call.

    Args:
      run: does the work; returns something ``sync`` waits on.
      sync: blocks until the work is done (``jax.block_until_ready``; identity for torch on the CPU).
      steps: steps one call of ``run`` performs (1 for a single step, N for a loop).
      repeats: timed calls after one warm-up call.

    Returns:
      ``{"median_us", "min_us", "max_us", "repeats"}`` per step.
    """
    sync(run())  # warm-up: compilation, caches, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(run())
        times.append((time.perf_counter() - start) / steps * 1e6)
    return {
        "median_us": statistics.median(times),
        "min_us": min(times),
        "max_us": max(times),
        "repeats": repeats,
    }


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``(fn(), seconds)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
