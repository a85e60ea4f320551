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
did not help the Transformer step at all: 13,363 to 14,587 faults in each
of 7 steps (three runs, 2026-12-06), against fewer than 25 in 4 to 7 of the
7 steps with jaxnets imported first. Import jaxnets first.

``JAXNETS_MALLOC=heap`` goes further, for models whose step needs more than
32 MB of temporaries at once: XLA:CPU puts a step's temporaries in one block,
and a block above 32 MB (glibc's ceiling for ``M_MMAP_THRESHOLD``) is always
mapped afresh and unmapped again, from whichever XLA thread runs the step
(another thread's arena cannot hold more than 64 MB either). ResNet-18's step
at batch 32 maps a 79 MB block: 19,450 page faults and 23-48 ms of system
time a step (of an 80 ms step). The mode adds ``M_ARENA_MAX`` 1 (every
thread allocates from the main heap), ``M_MMAP_MAX`` 0 (no block is mapped
on its own) and ``M_TRIM_THRESHOLD`` 1 GB (the heap keeps up to that much
freed memory at its top; with 256 MB it still shrank and grew again in some
steps). ResNet-18's step then faults in almost no step (one of 7 in some
runs) and took 63-76 ms against 80-108 ms (fastest of 8 rounds, one process
per setting, alternating, under the CPU lock, 2026-12-06, six pairs; the
machine slowed both sides in two of them). It is not the default because one
heap for every thread slows the smaller steps: the Transformer encoder's
step took 42-59 ms against 40-58 ms, LeNet's at batch 256 11.5-14.4 against
10.5-12.8 ms (the same runs). The cost in memory: freed memory stays with
the process up to 1 GB, and nothing is returned until the heap's top is free.

Measured per step, the default tuning does not remove every fault of the
Transformer step either: in 1 to 4 of 7 steps it still faulted about 14,000
times (four runs; glibc's defaults fault in every step), most likely because
the step runs on either of two XLA threads, each with an arena of its own.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameters (malloc.h)."""

TOP_PAD = 64 << 20
MMAP_THRESHOLD = 32 << 20
"""The values :func:`tune` sets: 64 MB of pad, the 32 MB ceiling of glibc's own sliding mmap threshold."""

HEAP = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30))
"""What ``JAXNETS_MALLOC=heap`` adds: one arena, no block mapped on its own, up to 1 GB kept at the heap's top."""

MODES = ("0", "1", "heap")
"""The values ``JAXNETS_MALLOC`` takes: off, the default tuning, the default and :data:`HEAP`."""

applied = False
"""Whether :func:`tune` set its values (the default's two, and :data:`HEAP`'s with ``JAXNETS_MALLOC=heap``)."""

mode = None
"""The ``JAXNETS_MALLOC`` value :func:`tune` read at import (``"1"`` when unset), so that :func:`setting` does not
read an environment the program may have changed since."""


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a GNU system
        return False


def tune() -> bool:
    """Set ``M_MMAP_THRESHOLD`` and ``M_TOP_PAD`` (see the module docstring) unless told not to; whether it did.

    With ``JAXNETS_MALLOC=heap``, also :data:`HEAP`'s values.

    Raises:
      ValueError: if ``JAXNETS_MALLOC`` is set to anything but one of :data:`MODES`.
    """
    global applied, mode
    mode = os.environ.get("JAXNETS_MALLOC", "1")
    if mode not in MODES:
        raise ValueError(
            f"JAXNETS_MALLOC={mode!r} is not a setting jaxnets knows; expected one of {', '.join(MODES)} "
            "(0: leave glibc's malloc alone, 1: the default tuning, heap: also one heap for all threads, "
            "for steps with more than 32 MB of temporaries; see jaxnets/_malloc.py). Unset it for the default."
        )
    if mode == "0" or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    if not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    values = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TOP_PAD, TOP_PAD)) + (HEAP if mode == "heap" else ())
    applied = all([mallopt(param, value) == 1 for param, value in values])
    return applied


def setting() -> str:
    """What this process's malloc runs with, in words; public as ``jaxnets.malloc_setting()``.

    One of "jaxnets' default tuning", "jaxnets' tuning with one heap (JAXNETS_MALLOC=heap)", "glibc's
    defaults", "glibc with the environment's MALLOC_..." or "the C library's own (not glibc)". The benchmark
    reports it per worker.
    """
    if applied:
        return "jaxnets' tuning with one heap (JAXNETS_MALLOC=heap)" if mode == "heap" else "jaxnets' default tuning"
    user = sorted(k for k in os.environ if k.startswith("MALLOC_"))
    if user:
        return f"glibc with the environment's {', '.join(user)}"
    return "glibc's defaults" if _glibc() else "the C library's own (not glibc)"
