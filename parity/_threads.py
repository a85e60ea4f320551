"""Thread counts for torch and NumPy's OpenBLAS while torch, NumPy and XLA share a process."""

from __future__ import annotations

import contextlib
import ctypes

import torch


def _openblas(get: str, set_: str):
    """NumPy's OpenBLAS thread-count functions ``(get, set)``, or None when the library is not found."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "")):
            if hasattr(lib, f"{prefix}{get}{suffix}") and hasattr(lib, f"{prefix}{set_}{suffix}"):
                return getattr(lib, f"{prefix}{get}{suffix}"), getattr(lib, f"{prefix}{set_}{suffix}")
    return None


@contextlib.contextmanager
def limited_threads():
    """One thread each for torch and NumPy's OpenBLAS inside the block, so that torch, NumPy and XLA share two cores.

    The tutorial's matrices (64x1000 by 1000x100) are too small for threads to
    pay off, and OpenBLAS or OpenMP workers spinning while XLA computes make the
    500-step NumPy loop forty times slower. OpenBLAS's count is set through its
    C API (``OPENBLAS_NUM_THREADS`` only counts before NumPy is imported); when
    the library cannot be found it is left alone. Both counts are restored on exit.
    """
    torch_threads = torch.get_num_threads()
    blas = _openblas("get_num_threads", "set_num_threads")
    blas_threads = blas[0]() if blas else None
    torch.set_num_threads(1)
    if blas:
        blas[1](1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        if blas:
            blas[1](blas_threads)
