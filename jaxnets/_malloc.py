"""glibc's malloc set up for XLA:CPU's buffers when jaxnets is imported, before JAX is.

XLA:CPU allocates each step's temporary buffers with ``malloc`` and frees them
at the end of the step. With glibc's defaults, freed memory at the top of the
heap above 128 KB is given back to the system, and the next step faults every
page of it in again. On the benchmark's Transformer encoder step (batch 32)
that was 14,100 page faults and 26.5 ms of system time per step, against 143
faults at batch 16 (measured 2026-12-06 with ``getrusage``, one process).

:func:`tune` keeps 64 MB of freed memory at the top of each heap
(``M_TOP_PAD``) and serves blocks up to 32 MB from the heap
(``M_MMAP_THRESHOLD``). Setting either turns off glibc's sliding mmap threshold,
which would otherwise rise to 32 MB by itself after the first large free; set
alone, the pad left it at 128 KB, and torch's eager step (in a process with the
same setting) went from 77 to 103 ms. With both, measured under the CPU lock
(``python -m parity.bench --only transformer``, both settings in both
workers): the Transformer step 44.6 ms against torch eager's 79.5 ms, whose
own time did not move; without them 56.6-60.7 ms against 77.0 ms. ResNet-18's
step: 111.6 / 130.2 ms min / median without, 79.2 / 82.6 ms with (8 rounds,
one process each). See docs/benchmark.md.

The cost: up to 64 MB of freed memory per malloc arena stays with the process
instead of going back to the system. It applies to the whole process (its
other libraries too) and only where the C library is glibc. jaxnets leaves it
alone when ``JAXNETS_MALLOC=0``, or when any ``MALLOC_*`` variable is set
(glibc then reads the user's own settings). Set after JAX has started, it
helps less (3,400 faults a step instead of about 150): import jaxnets first.
"""

from __future__ import annotations

import ctypes
import os

M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameters (malloc.h)."""

TOP_PAD = 64 << 20
MMAP_THRESHOLD = 32 << 20
"""The values :func:`tune` sets: 64 MB of pad, the 32 MB ceiling of glibc's own sliding mmap threshold."""

applied = False
"""Whether :func:`tune` set both values in this process."""


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a GNU system
        return False


def tune() -> bool:
    """Set ``M_MMAP_THRESHOLD`` and ``M_TOP_PAD`` (see the module docstring) unless told not to; whether it did."""
    global applied
    if os.environ.get("JAXNETS_MALLOC", "1") == "0" or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    if not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TOP_PAD, TOP_PAD) == 1
    return applied
