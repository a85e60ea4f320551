"""The persistent XLA compilation cache that the command-line entry points switch on."""

from __future__ import annotations

import os
from pathlib import Path

_programs: Path | None = None  # set by enable_compilation_cache: see programs_dir


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keep compiled programs on disk so that a second run of a command skips compilation.

    The directory is ``path``, else ``$JAXNETS_CACHE_DIR``, else
    ``~/.cache/jaxnets/xla``. Setting ``JAXNETS_CACHE_DIR`` to an empty string
    turns the cache off. Library users opt in by calling this themselves.

    JAX's entries go in a subdirectory per host CPU, ``cpu-<id>``
    (:func:`jaxnets._programs.host_cpu_id`): XLA:CPU compiles for the CPU it
    runs on and JAX's key does not name it, so in a home directory shared by
    machines with other CPUs each would reject the other's entries (XLA logs an
    error line for each and compiles again) and overwrite them. The stored
    programs (``programs/``) name the CPU in their own keys.

    Returns:
      The cache directory, or None when the cache is off.
    """
    global _programs
    _programs = None
    if path is None:
        path = os.environ.get("JAXNETS_CACHE_DIR", str(Path.home() / ".cache" / "jaxnets" / "xla"))
    if not str(path):
        return None
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home must not stop the command: it just compiles every time
    use_xla_cache(path)
    _programs = path / "programs"
    return path


def use_xla_cache(path: Path) -> Path:
    """Point JAX's persistent cache at ``path / "cpu-<id>"`` (this host CPU's directory), every program cached.

    The one place that sets JAX's cache options, for :func:`enable_compilation_cache` and the test suite's own
    cache (``tests/conftest.py``). Returns that directory.
    """
    import jax  # here: a command that never reaches this point (--help, a usage error) loads no JAX

    from ._programs import host_cpu_id

    directory = path / f"cpu-{host_cpu_id()}"
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # The default caches only programs that took over a second to compile; most
    # of the tutorial's are smaller, and together they are most of its run time.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def programs_dir() -> Path | None:
    """Where :mod:`jaxnets._programs` keeps whole compiled programs: ``programs/`` in the directory of the last
    :func:`enable_compilation_cache` call; None when that call turned the cache off, or none was made."""
    return _programs
