import os
from pathlib import Path

import jax
import pytest

from jaxnets._cache import use_xla_cache

CACHE_CAP = 2**30
"""Bytes of compiled programs kept for later runs (one run writes about 50 MB; each change of the code adds the
programs it changes). JAX's own cap (``jax_compilation_cache_max_size``) scans the directory at every write."""


def pytest_configure(config):
    """Compile each distinct program once per run, and not again in later runs: JAX's persistent compilation
    cache in ``.pytest_cache`` (``pytest --cache-clear`` empties it; ``$JAX_COMPILATION_CACHE_DIR``, when set,
    wins).

    Most of the suite's time is XLA compiling one program per test case, and many tests build the same program
    from their own function objects (jit's in-memory cache is per function), each worker apart. The cache, keyed
    by the program, XLA's flags and the jax/jaxlib versions, serves those from the first compilation. Measured
    2026-12-07 (``make test``'s pytest, two workers, one run each under the CPU lock): 295 and 274 s without it
    (492 to 520 s of CPU), 261 and 248 s with an empty cache (447 to 460 s of CPU), 167 s with the cache a run
    left.
    """
    if getattr(config, "cache", None) is None or os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # -p no:cacheprovider
        return
    # One directory per host CPU (jaxnets._cache.use_xla_cache, as the commands' cache): XLA:CPU compiles for the
    # CPU it runs on, JAX's key does not name it, and a working tree can be shared between machines.
    path = use_xla_cache(Path(config.cache.mkdir("jax-compilation-cache")))
    path.mkdir(exist_ok=True)
    if not hasattr(config, "workerinput"):  # once per run, before the workers start: emptied when over the cap
        entries = list(os.scandir(path))
        if sum(e.stat().st_size for e in entries) > CACHE_CAP:
            for e in entries:
                os.remove(e.path)
    # JAX writes an entry in place, not by renaming a finished file: one cut short (a run interrupted as it wrote,
    # or read by the other worker while written) fails to load, with a warning the suite would raise as an error.
    # JAX then compiles the program afresh, which is all a test needs.
    for verb in ("reading", "writing"):
        config.addinivalue_line("filterwarnings", f"ignore:Error {verb} persistent compilation cache entry:UserWarning")


@pytest.fixture
def x64():
    """Run one test with 64-bit floats enabled, and restore the default afterwards."""
    with jax.enable_x64(True):
        yield


def _recorded(event: str):
    """A list of the function names jax's ``event`` (a compile-time duration event) names while the test runs."""
    seen: list[str] = []

    def listener(name, duration, **kwargs):
        if name == event:
            seen.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield seen
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def backend_compiles():
    """A list that records every XLA compilation (by function name) while the test runs."""
    yield from _recorded("/jax/core/compile/backend_compile_duration")


@pytest.fixture
def traces():
    """A list that records every function traced to a jaxpr (by name) while the test runs."""
    yield from _recorded("/jax/core/compile/jaxpr_trace_duration")


@pytest.fixture(autouse=True)
def no_persistent_compilation_cache(monkeypatch):
    """Keep the command-line entry points from writing to ~/.cache during tests."""
    monkeypatch.setenv("JAXNETS_CACHE_DIR", "")
