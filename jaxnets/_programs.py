"""Compiled programs kept on disk between runs of a command, and loaded on the next run without tracing them.

The persistent XLA cache (:mod:`jaxnets._cache`) skips only XLA's compilation: every process still traces
each program to a jaxpr, lowers it to MLIR and hashes that to look it up. For a warm ``jaxnets train`` (digits,
LeNet, Adam) that was about 0.4 s for its epoch loop and test evaluation (0.24 s tracing the loop, 0.12 s
lowering both, then the lookup). :class:`Programs` stores each compiled executable
(``jax.experimental.serialize_executable``) under a key made of everything it depends on, and loads it on the
next run from the key alone: measured 0.5 to 0.58 s less per warm ``jaxnets train`` (docs/benchmark.md,
"Stored programs"). Only freshly compiled executables are stored (see :func:`_fresh_compilation`).

A stale program must never run, so the key (:func:`environment` and :meth:`Programs.call`) holds:

- the bytes of every ``jaxnets/**/*.py``: the programs close over jaxnets' models, losses, optimizers and
  trainer, and a narrower set would have to be kept in step with every import by hand;
- the versions of Python, jax, jaxlib, flax, optax, numpy and ml_dtypes (their code is traced into the program);
- every ``JAX_*`` and ``XLA_*`` environment variable and ``LIBTPU_INIT_ARGS``, every ``jax.config`` value as
  the calling thread sees it (x64, matmul precision, PRNG implementation, ...);
- the backend: platform and its version, every device's id, kind and process, the process count; the host
  CPU's machine, model and instruction-set flags (:func:`host_cpu`);
- per program: its name, the caller's description of what the program closes over (``jaxnets train``'s whole
  config, its steps per epoch and device count: model, optimizer and its hyperparameters, schedule; a run with
  another ``--epochs`` or ``--seed`` misses too, though only a schedule uses them), the static arguments,
  the argument tree and every argument's shape, dtype, weak type, sharding and committedness.

A missing entry is compiled as usual and written (atomically: a temporary file renamed); an unreadable,
corrupt or unloadable one is compiled as usual with a one-line warning: no read, write or load error stops a
run. Not detected: an entry that loads but fails when it runs (as a re-serialised one did, see
:func:`_fresh_compilation`); its arguments are donated by then, so the run stops with XLA's error.
Multi-process runs do not use it (each process would write the same files).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import pickle
import platform
import sys
from pathlib import Path

import jax

from ._copies import private_copy
from ._files import atomic_write

log = logging.getLogger("jaxnets")

FORMAT = b"jaxnets-program 1\n"
"""The first bytes of an entry; the SHA-256 of the rest follows, then the pickled entry."""

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml_dtypes")
_environment: str | None = None


def source_digest() -> str:
    """SHA-256 over the relative path and bytes of every ``.py`` file of the jaxnets package (about 0.9 MB)."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def environment() -> str:
    """What every program depends on besides its own arguments: sources, versions and devices (read once per
    process), environment variables and config values (read at every call)."""
    global _environment
    if _environment is None:
        versions = {p: importlib.metadata.version(p) for p in _PACKAGES}
        devices = [(d.id, d.platform, d.device_kind, d.process_index) for d in jax.devices()]
        backend = jax.devices()[0].client
        _environment = repr(
            {
                "jaxnets": source_digest(),
                "python": sys.version,
                "versions": versions,
                "backend": (backend.platform, backend.platform_version, jax.process_count(), devices),
                "host": host_cpu(),
            }
        )
    # Read at every call: every config value as the calling thread sees it (`with jax.default_matmul_precision`
    # included), and the environment variables as they are now.
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(("JAX_", "XLA_")) or k == "LIBTPU_INIT_ARGS")
    return _environment + repr((env, sorted((k, repr(v)) for k, v in jax.config.values.items())))


def host_cpu() -> str:
    """The host CPU a CPU program was compiled for: its machine, model and instruction-set flags.

    XLA:CPU compiles for the CPU it runs on (AVX-512 here, say), and a cache directory can travel (a shared home,
    a copied ``~/.cache``): a program built for another CPU's instructions would not fail with an error to recover
    from, it would stop the process. From ``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows.
    """
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    keep = ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part")
    first = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in keep:
            first.setdefault(name.strip(), value.strip())
    return repr((platform.machine(), platform.processor(), sorted(first.items())))


def host_cpu_id() -> str:
    """A short name for :func:`host_cpu`: the first 12 hex digits of its SHA-256, for a directory per host CPU."""
    return hashlib.sha256(host_cpu().encode()).hexdigest()[:12]


def _spec(x) -> tuple:
    """What a compiled program takes from an argument: its shape, dtype, weak type, sharding and committedness."""
    if isinstance(x, jax.Array):
        return (x.shape, str(x.dtype), x.aval.weak_type, str(x.sharding), x.committed)
    return (type(x).__name__, getattr(x, "shape", None), str(getattr(x, "dtype", None)), repr(x) if x is None else "")


class Programs:
    """Compiled programs of one command in ``directory``, keyed by ``context`` and everything in :func:`environment`.

    Args:
      directory: where entries live (created on the first write).
      context: a description (its ``repr`` goes into every key) of everything the caller's programs close over
        that the jaxnets sources and the arguments do not fix: for ``jaxnets train``, its config and steps per
        epoch, from which the model and the optimizer are built.
    """

    def __init__(self, directory: str | os.PathLike, context):
        self.directory = Path(directory)
        self.context = repr(context)
        self._loaded: dict = {}
        self.loads = 0
        """Programs this process loaded from disk (not traced)."""
        self.stores = 0
        """Programs this process compiled and wrote."""

    def call(self, name: str, fn, args: tuple, *, static_argnums: tuple = (), depends: str = ""):
        """``fn(*args)`` for the jitted ``fn``, by a program loaded from disk when one is stored under its key.

        Args:
          name: the program's name, unique among the caller's programs.
          fn: a ``jax.jit`` function.
          args: its positional arguments, static ones included.
          static_argnums: the positions of ``fn``'s static arguments (their ``repr`` goes into the key).
          depends: anything else the program closes over (e.g. the trainer's state tree).
        """
        dynamic = [a for i, a in enumerate(args) if i not in static_argnums]
        leaves, tree = jax.tree.flatten(dynamic)
        static = tuple(repr(args[i]) for i in static_argnums)
        memo = (name, static, tree, depends, tuple(_spec(x) for x in leaves))
        compiled = self._loaded.get(memo)
        if compiled is not None:
            return compiled(*dynamic)
        key = repr((environment(), self.context, memo))
        path = self.directory / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:40]}.jaxnets-program"
        compiled = self._load(path, key)
        if compiled is not None:
            # Its first run is on copies, so that the arguments survive an entry that loads but fails to run
            # (a donated argument is gone once the program starts): then it is compiled anew, as a damaged one.
            try:
                out = compiled(*jax.tree.map(_copy, dynamic))
            except Exception as e:
                log.warning(f"jaxnets: the stored program {path} failed ({type(e).__name__}: {e}); compiling it again")
                self.loads -= 1
            else:
                self._loaded[memo] = compiled
                return out
        with _fresh_compilation() as fresh:
            compiled = fn.lower(*args).compile()
        if fresh:
            self._store(path, key, compiled)
        self._loaded[memo] = compiled
        return compiled(*dynamic)

    def _load(self, path: Path, key: str):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning(f"jaxnets: cannot read the stored program {path} ({e}); compiling it again")
            return None
        try:
            from jax.experimental import serialize_executable

            body = raw[len(FORMAT) + 32 :]
            if not raw.startswith(FORMAT) or hashlib.sha256(body).digest() != raw[len(FORMAT) : len(FORMAT) + 32]:
                raise ValueError("not a jaxnets program, or damaged")
            stored_key, blob, in_tree, out_tree, device_ids = pickle.loads(body)
            if stored_key != key:
                raise ValueError("stored under another key")
            # Its own devices, in order: by default it would be loaded onto every device of the backend, and a
            # one-device program on a backend of two then refuses its one-device arguments.
            by_id = {d.id: d for d in jax.devices()}
            devices = [by_id[i] for i in device_ids]
            compiled = serialize_executable.deserialize_and_load(blob, in_tree, out_tree, execution_devices=devices)
        except Exception as e:  # any damage: compile as if nothing were stored
            log.warning(f"jaxnets: ignoring the stored program {path} ({type(e).__name__}: {e}); compiling it again")
            return None
        self.loads += 1
        return compiled

    def _store(self, path: Path, key: str, compiled) -> None:
        try:
            from jax.experimental import serialize_executable

            blob, in_tree, out_tree = serialize_executable.serialize(compiled)
            device_ids = [d.id for d in compiled.runtime_executable().local_devices()]
            body = pickle.dumps((key, blob, in_tree, out_tree, device_ids), protocol=pickle.HIGHEST_PROTOCOL)
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: tmp.write_bytes(FORMAT + hashlib.sha256(body).digest() + body))
        except Exception as e:  # a read-only or full disk, a program that cannot be serialised: run on
            log.warning(f"jaxnets: could not store the compiled program {path.name} ({type(e).__name__}: {e})")
            return
        self.stores += 1


def _copy(x):
    """A private copy of an argument (:func:`jaxnets._copies.private_copy`), on the argument's devices."""
    return jax.device_put(private_copy(x), x.sharding) if isinstance(x, jax.Array) else x


@contextlib.contextmanager
def _fresh_compilation():
    """Compile without the persistent XLA cache; yields whether it could be bypassed.

    An executable that XLA:CPU loaded from the persistent cache serialises incompletely (jaxlib 0.10.2): loaded
    again, its first run failed with ``NOT_FOUND: Function slice_concatenate_fusion.4 not found``. Only freshly
    compiled executables are therefore stored. JAX decides once per process whether it uses its cache; this
    flips that decision for the duration, through a private module (restored after), and yields False where
    that module differs, so that nothing is stored.
    """
    try:
        from jax._src import compilation_cache as cc

        saved = cc._cache_checked, cc._cache_used
    except (ImportError, AttributeError):
        yield False
        return
    cc._cache_checked, cc._cache_used = True, False
    try:
        yield True
    finally:
        cc._cache_checked, cc._cache_used = saved


def programs(context) -> Programs | None:
    """The :class:`Programs` of a command whose programs depend on ``context``, in the directory the compilation
    cache switched on by :func:`jaxnets._cache.enable_compilation_cache` holds; None when that cache is off or
    the run has several processes."""
    from ._cache import programs_dir

    directory = programs_dir()
    if directory is None or jax.process_count() > 1:
        return None
    return Programs(directory, context)
