"""Checkpoints of training runs: a pytree of arrays and a JSON dict, one directory per step, written with orbax.

A checkpoint directory holds one subdirectory per saved step (``DIR/1``,
``DIR/2``, ...), each with three orbax items::

    DIR/3/state/     the arrays (orbax StandardSave: zarr in an OCDBT store)
    DIR/3/metadata/  your JSON dict (orbax JsonSave)
    DIR/3/manifest/  jaxnets' own JSON: every array's path, shape, dtype and SHA-256

Saving is synchronous and atomic: orbax writes into ``DIR/3.orbax-checkpoint-tmp``
and renames it to ``DIR/3`` only when everything is on disk, so a process killed
mid-save leaves the earlier steps intact and an unfinished temporary directory
that :func:`all_steps` ignores and the next :func:`save` removes. Old steps
dropped by ``keep`` are renamed out of the way before they are deleted, so a kill
during the clean-up never leaves a half-deleted step that looks complete.

Restoring checks everything it reads: the arrays' structure, shapes and dtypes
against the ``like`` tree, and every array's bytes against the SHA-256 recorded
at save time, so a restored state is bit-identical to the saved one or the
restore fails with a :class:`CheckpointError` naming the checkpoint and the
damage. Typical use, one checkpoint per epoch::

    from jaxnets import checkpoint

    state = {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param)), "opt_state": opt_state}
    checkpoint.save(run_dir / "checkpoints", epoch, state, {"epoch": epoch, "model": config})
    ...
    state, meta = checkpoint.restore(run_dir / "checkpoints", like=fresh_state)  # the latest step

In a multi-process run (``jax.distributed``), every call is local to the
process that makes it: orbax's cross-process barriers are off (each process is
its own primary host and only active process), so one process saves (``jaxnets
train`` saves from process 0) while any process may read. Arrays are written
from host copies, so a saved array must be replicated or held whole by the
saving process; the directory must be on a filesystem the readers share.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT_VERSION = 1
"""Version of the layout written by :func:`save`, stored in every manifest."""

_ITEMS = ("state", "metadata", "manifest")
_STEP_NAME = re.compile(r"0|[1-9][0-9]*")
_TMP_MARK = ".orbax-checkpoint-tmp"
_TRASH_PREFIX = ".deleting-"
_MAX_LISTED = 20
# How long a failed orbax call keeps muting tensorstore's late callbacks (they come within a millisecond).
_DRAIN_SECONDS = 0.1


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read: missing, damaged, or of another model."""


class NoCheckpointError(CheckpointError):
    """The directory holds no checkpoint at all (or the requested step is not there)."""


# -- paths and steps -----------------------------------------------------------


def _directory(directory) -> Path:
    if not isinstance(directory, str | os.PathLike):
        raise TypeError(f"checkpoint: `directory` must be a path (str or os.PathLike); got {type(directory).__name__}.")
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} is a file, not a directory: pass the directory of a run.")
    return path.absolute()


def _train_hint(directory: Path) -> str:
    run_dir = directory.parent if directory.name == "checkpoints" else Path("RUN_DIR")
    return f"train first with `jaxnets train --out {run_dir}` (it saves into {run_dir / 'checkpoints'})"


def all_steps(directory) -> list[int]:
    """The steps of the finished checkpoints in ``directory``, in increasing order.

    Unfinished saves (orbax's ``<step>.orbax-checkpoint-tmp`` directories) are
    not listed. A step directory that was damaged after it was written is listed;
    :func:`restore` reports what is wrong with it.

    Args:
      directory: the checkpoint directory, e.g. ``RUN_DIR / "checkpoints"``.

    Returns:
      The saved steps, ``[]`` when the directory holds none or does not exist.
    """
    path = _directory(directory)
    if not path.exists():
        return []
    return sorted(int(p.name) for p in path.iterdir() if _STEP_NAME.fullmatch(p.name) and p.is_dir())


def latest_step(directory) -> int | None:
    """The last finished step in ``directory``, or None when there is none (see :func:`all_steps`)."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def _step_dir(directory, step: int | None) -> Path:
    """The directory of ``step`` (the latest when None), or a clear error when there is none."""
    path = _directory(directory)
    if step is not None and (not isinstance(step, int | np.integer) or isinstance(step, bool) or step < 0):
        raise TypeError(f"checkpoint: `step` must be a non-negative int or None (the latest); got {step!r}.")
    steps = all_steps(path)
    if not steps:
        why = "the directory does not exist" if not path.exists() else "it holds no finished checkpoint"
        raise NoCheckpointError(f"no checkpoint in {path}: {why}. {_train_hint(path).capitalize()}.")
    if step is None:
        step = steps[-1]
    if int(step) not in steps:
        raise NoCheckpointError(
            f"no checkpoint of step {step} in {path}; it holds steps {_list(steps)}. "
            f"Pass one of these, or step=None for the latest ({steps[-1]})."
        )
    return path / str(int(step))


def _list(values) -> str:
    values = [str(v) for v in values]
    more = len(values) - _MAX_LISTED
    return ", ".join(values[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def _others(step_dir: Path) -> str:
    earlier = [s for s in all_steps(step_dir.parent) if s != int(step_dir.name)]
    if not earlier:
        return "There is no other checkpoint in this directory."
    return f"Other checkpoints in this directory: steps {_list(earlier)}; restore one with `step=`."


# -- what is saved ---------------------------------------------------------------


def _path_str(path) -> str:
    """``params/fc1/kernel``: dict keys, attribute names (namedtuple fields) and indices joined by ``/``."""
    return jax.tree_util.keystr(path, simple=True, separator="/") or "<root>"


def _leaves(tree, what: str) -> list[tuple[str, Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = [(_path_str(p), leaf) for p, leaf in leaves]
    seen = set()
    for name, _ in out:
        if name in seen:
            raise ValueError(f"checkpoint: two arrays of {what} have the same path {name!r}; rename one of the keys.")
        seen.add(name)
    return out


def _as_numpy(name: str, leaf) -> np.ndarray:
    """The host copy of a state leaf, or a clear error for what orbax cannot store exactly."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.extended):
        raise TypeError(
            f"checkpoint.save: state leaf {name} is a typed PRNG key array ({leaf.dtype}); save "
            "jax.random.key_data(key) instead and rebuild the key with jax.random.wrap_key_data."
        )
    if not isinstance(leaf, jax.Array | np.ndarray | np.generic):
        raise TypeError(
            f"checkpoint.save: state leaf {name} is a {type(leaf).__name__}; every leaf must be a jax or numpy "
            "array (or numpy scalar). Wrap numbers with np.asarray(...), or put them into `metadata`."
        )
    try:
        array = np.asarray(leaf)
    except RuntimeError as error:
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            raise
        raise ValueError(
            f"checkpoint.save: state leaf {name} is split over devices of other processes "
            f"({leaf.sharding}), so this process cannot read it whole. Save replicated arrays (as "
            "jaxnets.Trainer keeps its state), or gather it first (jax.experimental.multihost_utils.process_allgather)."
        ) from error
    if array.dtype == object:
        raise TypeError(f"checkpoint.save: state leaf {name} has dtype object; only numeric arrays can be saved.")
    if array.size == 0:
        raise ValueError(
            f"checkpoint.save: state leaf {name} is empty (shape {array.shape}); orbax cannot save arrays "
            "with no elements. Leave it out of the state."
        )
    return array


def _sha256(array: np.ndarray) -> str:
    # A byte view: memoryview cannot describe extension dtypes such as bfloat16.
    return hashlib.sha256(np.ascontiguousarray(array).reshape(-1).view(np.uint8)).hexdigest()


def _manifest(state) -> tuple[dict, Any]:
    """The manifest of ``state`` (path, shape, dtype, SHA-256 of every array) and ``state`` as host arrays.

    The host copies serve both: hashed here and handed to orbax, which writes
    them as they are (and, with several processes, from this process alone).
    """
    arrays, host = [], []
    for name, leaf in _leaves(state, "the state"):
        array = _as_numpy(name, leaf)
        host.append(array)
        arrays.append({"path": name, "shape": list(array.shape), "dtype": array.dtype.name, "sha256": _sha256(array)})
    if not arrays:
        raise ValueError("checkpoint.save: `state` holds no arrays; pass e.g. {'params': ..., 'opt_state': ...}.")
    return {"format": FORMAT_VERSION, "arrays": arrays}, jax.tree.unflatten(jax.tree.structure(state), host)


def _check_json(value, where: str = "metadata") -> None:
    """Raise a clear TypeError at the first value that does not survive a JSON round trip as itself."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"checkpoint.save: {where} has the key {key!r} of type {type(key).__name__}; JSON keys "
                    f"are strings. Use str({key!r})."
                )
            _check_json(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
    elif not isinstance(value, str | int | float | bool | type(None)):
        hint = " Convert it with .tolist() or float(...)." if isinstance(value, np.ndarray | np.generic) else ""
        raise TypeError(
            f"checkpoint.save: {where} is a {type(value).__name__}, which JSON cannot store; metadata must "
            f"hold only dicts, lists, str, int, float, bool and None.{hint}"
        )


@contextlib.contextmanager
def _orbax_call():
    """Mute the "Event loop is closed" errors tensorstore reports after a failed orbax read or write.

    When one array fails, orbax stops waiting and closes its event loop while
    tensorstore still finishes the other reads; their callbacks then find the
    loop closed and Python prints "Exception ignored ... RuntimeError: Event
    loop is closed" (an error under pytest's warnings-as-errors) after our own,
    clear error. Nothing else is muted.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    except Exception:
        time.sleep(_DRAIN_SECONDS)
        raise
    finally:
        sys.unraisablehook = previous


# -- orbax, one process at a time ------------------------------------------------


def _this_process() -> ocp.options.MultiprocessingOptions:
    """orbax's options for a call made by this process alone.

    By default orbax expects every process of a multi-process run to call it
    together and meets them at barriers; a save from process 0 alone would wait
    there for ever. Making this process orbax's primary host and its only
    active process turns the barriers off. One process: orbax's defaults.
    """
    if jax.process_count() == 1:
        return ocp.options.MultiprocessingOptions()
    index = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=index, active_processes={index})


def _handlers() -> dict:
    """A handler per item, with :func:`_this_process`'s options (default-built ones would use orbax's defaults)."""
    options = _this_process()
    return {
        "state": ocp.StandardCheckpointHandler(multiprocessing_options=options),
        "metadata": ocp.JsonCheckpointHandler(multiprocessing_options=options),
        "manifest": ocp.JsonCheckpointHandler(multiprocessing_options=options),
    }


# -- save --------------------------------------------------------------------------

_WRITERS: dict[tuple[int, int], ocp.Checkpointer] = {}
_WRITERS_LOCK = threading.Lock()


@contextlib.contextmanager
def _writer():
    """This process's orbax writer of step directories, built once and kept: one save at a time.

    Building orbax's handlers, checkpointer and manager anew cost about a third
    of every save (measured 46 ms a save against 31 ms with one kept writer, the
    LeNet and Adam state of ``jaxnets train``). The writer is keyed by the
    process index and count, since :func:`_this_process`'s options depend on
    them; the lock keeps saves from several threads one after another.
    """
    key = (jax.process_index(), jax.process_count())
    with _WRITERS_LOCK:
        if key not in _WRITERS:
            options = _this_process()
            composite = ocp.CompositeCheckpointHandler(
                composite_options=ocp.CompositeOptions(multiprocessing_options=options), **_handlers()
            )
            _WRITERS[key] = ocp.Checkpointer(composite, multiprocessing_options=options)
        yield _WRITERS[key]


def _remove_leftovers(path: Path) -> None:
    """Delete unfinished saves and interrupted deletions left by a killed process."""
    for p in path.iterdir():
        if _TMP_MARK in p.name or p.name.startswith(_TRASH_PREFIX):
            shutil.rmtree(p, ignore_errors=True)


def _drop_old(path: Path, keep: int) -> None:
    for step in all_steps(path)[:-keep]:
        # A rename is atomic: a kill during rmtree leaves a name all_steps ignores.
        trash = path / f"{_TRASH_PREFIX}{step}"
        os.replace(path / str(step), trash)
        shutil.rmtree(trash)


def save(directory, step: int, state, metadata: dict | None = None, *, keep: int | None = None) -> Path:
    """Write checkpoint ``step`` of ``state`` and ``metadata`` into ``directory``; return its path.

    The save is synchronous (finished on disk when this returns) and atomic
    (orbax writes a temporary directory and renames it when complete). Leftovers
    of a save that was killed are removed first.

    Args:
      directory: the checkpoint directory, created if missing, e.g. ``RUN_DIR / "checkpoints"``.
      step: the step to save, an int greater than every step already in
        ``directory`` (e.g. the epoch).
      state: a pytree of jax or numpy arrays (dicts, lists, tuples, namedtuples
        such as optax states): e.g. ``{"params": nnx.to_pure_dict(nnx.state(model,
        nnx.Param)), "opt_state": opt_state}``.
      metadata: a JSON-serialisable dict (model and optimizer configuration,
        epoch, metrics history, ...); tuples come back as lists.
      keep: keep only the last ``keep`` checkpoints, deleting older ones after
        this save succeeds; None (the default) keeps all.

    Returns:
      The checkpoint's directory, ``directory / str(step)``.

    Raises:
      CheckpointError: the step is not after the last saved step, or writing failed.
      TypeError: a state leaf is not an array, or ``metadata`` is not JSON.
    """
    path = _directory(directory)
    if not isinstance(step, int | np.integer) or isinstance(step, bool) or step < 0:
        raise TypeError(f"checkpoint.save: `step` must be a non-negative int; got {step!r}.")
    step = int(step)
    if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
        raise ValueError(f"checkpoint.save: `keep` must be a positive int or None (keep all); got {keep!r}.")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, Mapping):
        raise TypeError(f"checkpoint.save: `metadata` must be a dict; got {type(metadata).__name__}.")
    _check_json(metadata)
    steps = all_steps(path)  # before the state is copied and hashed: a refused step costs nothing
    if steps and step <= steps[-1]:
        what = "already exists" if step in steps else f"is not after the latest step {steps[-1]}"
        raise CheckpointError(
            f"cannot save checkpoint {step} in {path}: step {step} {what}, and steps must increase. "
            f"Save into a new directory, or move the checkpoints from step {step} on out of {path} first."
        )
    # Host arrays: orbax would otherwise copy device arrays again, and with several processes
    # write each array's shards from the processes that hold them, at barriers.
    manifest, state = _manifest(state)
    path.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        metadata=ocp.args.JsonSave(dict(metadata)),
        manifest=ocp.args.JsonSave(manifest),
    )
    try:
        with _orbax_call(), _writer() as writer:
            # Into DIR/<step>.orbax-checkpoint-tmp-*, renamed to DIR/<step> once every item is on disk.
            writer.save(path / str(step), args=args)
    except Exception as error:
        raise CheckpointError(
            f"could not write checkpoint {path / str(step)}: {_summary(error)}. The earlier checkpoints "
            "are untouched; the unfinished one is removed by the next save."
        ) from error
    if not (path / str(step)).is_dir():
        raise CheckpointError(f"orbax reported no error but wrote no checkpoint {path / str(step)}.")
    if keep is not None:
        _drop_old(path, keep)
    return path / str(step)


# -- restore -----------------------------------------------------------------------


def _reader() -> ocp.Checkpointer:
    """An orbax reader of one step directory that knows the handler of each of its items."""
    registry = ocp.DefaultCheckpointHandlerRegistry()
    handlers = _handlers()
    registry.add("state", ocp.args.StandardRestore, handlers["state"])
    registry.add("metadata", ocp.args.JsonRestore, handlers["metadata"])
    registry.add("manifest", ocp.args.JsonRestore, handlers["manifest"])
    options = _this_process()
    composite = ocp.CompositeCheckpointHandler(
        handler_registry=registry, composite_options=ocp.CompositeOptions(multiprocessing_options=options)
    )
    return ocp.Checkpointer(composite, multiprocessing_options=options)


def _summary(error: BaseException) -> str:
    """The useful head of an orbax/tensorstore message (without the long JSON spec)."""
    text = str(error).split(" [tensorstore_spec=")[0].strip() or type(error).__name__
    first = text.splitlines()[0]
    return f"{type(error).__name__}: {first[:400]}"


def _check_layout(step_dir: Path, items) -> None:
    if not any(step_dir.iterdir()):
        raise CheckpointError(
            f"checkpoint {step_dir} is empty: the save that made it never finished or its files were deleted. "
            f"Delete {step_dir}. {_others(step_dir)}"
        )
    missing = [item for item in items if not (step_dir / item).is_dir()]
    if missing:
        raise CheckpointError(
            f"checkpoint {step_dir} is incomplete: {', '.join(f'{m}/' for m in missing)} missing (a jaxnets "
            f"checkpoint holds {', '.join(f'{i}/' for i in _ITEMS)}). It was damaged or not written by "
            f"jaxnets.checkpoint.save. {_others(step_dir)}"
        )


def _read_json(step_dir: Path, item: str):
    _check_layout(step_dir, (item,))
    try:
        with _orbax_call():
            restored = _reader().restore(step_dir, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {step_dir} is damaged: its {item} file in {step_dir / item} cannot be read "
            f"({_summary(error)}). {_others(step_dir)}"
        ) from error
    value = restored[item]
    if not isinstance(value, dict):
        raise CheckpointError(
            f"checkpoint {step_dir} is damaged: its {item} file in {step_dir / item} holds a "
            f"{type(value).__name__}, not a JSON object. {_others(step_dir)}"
        )
    return value


def _read_manifest(step_dir: Path) -> dict[str, dict]:
    manifest = _read_json(step_dir, "manifest")
    try:
        if manifest["format"] != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {step_dir} has format {manifest['format']!r}; this jaxnets reads format "
                f"{FORMAT_VERSION}. Read it with the jaxnets version that wrote it."
            )
        arrays = {
            a["path"]: {"shape": tuple(a["shape"]), "dtype": np.dtype(a["dtype"]), "sha256": a["sha256"]}
            for a in manifest["arrays"]
        }
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {step_dir} is damaged: its manifest in {step_dir / 'manifest'} is malformed "
            f"({_summary(error)}). {_others(step_dir)}"
        ) from error
    return arrays


def read_metadata(directory, step: int | None = None) -> dict:
    """The JSON metadata saved with checkpoint ``step`` (the latest when None), without loading arrays.

    Args:
      directory: the checkpoint directory.
      step: the step to read; the latest when None.

    Returns:
      The ``metadata`` dict given to :func:`save` (tuples read back as lists).

    Raises:
      NoCheckpointError: no checkpoint (of that step) in ``directory``.
      CheckpointError: the metadata file is missing or not JSON.
    """
    return _read_json(_step_dir(directory, step), "metadata")


def _describe(entry) -> tuple[tuple, np.dtype]:
    return tuple(entry["shape"]), np.dtype(entry["dtype"])


def _like_entries(like) -> list[tuple[str, Any, tuple, np.dtype]]:
    out = []
    for name, leaf in _leaves(like, "`like`"):
        if not isinstance(leaf, jax.Array | jax.ShapeDtypeStruct | np.ndarray | np.generic):
            raise TypeError(
                f"checkpoint.restore: `like` leaf {name} is a {type(leaf).__name__}; `like` must be a pytree of "
                "jax/numpy arrays or jax.ShapeDtypeStruct (e.g. the state of a freshly built model and optimizer)."
            )
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.extended):
            raise TypeError(
                f"checkpoint.restore: `like` leaf {name} is a typed PRNG key array ({leaf.dtype}); checkpoints "
                "hold jax.random.key_data(key): pass that in `like` and rebuild with jax.random.wrap_key_data."
            )
        out.append((name, leaf, tuple(leaf.shape), np.dtype(leaf.dtype)))
    return out


def _check_like(step_dir: Path, saved: dict[str, dict], entries) -> None:
    expected = {name: (shape, dtype) for name, _, shape, dtype in entries}
    lines = []
    for name, (shape, dtype) in expected.items():
        if name not in saved:
            lines.append(f"{name} {shape} {dtype} is missing from the checkpoint")
            continue
        saved_shape, saved_dtype = _describe(saved[name])
        if saved_shape != shape:
            lines.append(f"{name} has shape {saved_shape} in the checkpoint, {shape} here")
        elif saved_dtype != dtype:
            lines.append(f"{name} has dtype {saved_dtype} in the checkpoint, {dtype} here")
    for name, entry in saved.items():
        if name not in expected:
            shape, dtype = _describe(entry)
            lines.append(f"{name} {shape} {dtype} is in the checkpoint but not here")
    if lines:
        shown = lines[:_MAX_LISTED] + ([f"... and {len(lines) - _MAX_LISTED} more"] if len(lines) > _MAX_LISTED else [])
        raise CheckpointError(
            f"checkpoint {step_dir} was saved from a different model or optimizer:\n  "
            + "\n  ".join(shown)
            + "\nBuild the model and optimizer with the configuration saved in the checkpoint "
            "(jaxnets.checkpoint.read_metadata), or restore without `like` to inspect it."
        )


def _template(shape, dtype):
    """A zero-memory numpy array of the saved shape and dtype: tells orbax to read into numpy."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _read_arrays(step_dir: Path, target):
    try:
        with _orbax_call():
            restored = _reader().restore(step_dir, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {step_dir} is damaged: its arrays in {step_dir / 'state'} cannot be read "
            f"({_summary(error)}). {_others(step_dir)}"
        ) from error
    return restored["state"]


def _saved_structure(step_dir: Path):
    try:
        with _orbax_call():
            tree = _reader().metadata(step_dir).item_metadata["state"].tree
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {step_dir} is damaged: the index of its arrays in {step_dir / 'state'} cannot be "
            f"read ({_summary(error)}). {_others(step_dir)}"
        ) from error
    return tree


def _verify(step_dir: Path, saved: dict[str, dict], restored) -> None:
    leaves = _leaves(restored, "the checkpoint")
    names = {name for name, _ in leaves}
    if names != set(saved):
        raise CheckpointError(
            f"checkpoint {step_dir} is damaged: its arrays ({_list(sorted(names))}) do not match its manifest "
            f"({_list(sorted(saved))}). {_others(step_dir)}"
        )
    for name, array in leaves:
        entry = saved[name]
        if _describe(entry) != (tuple(np.shape(array)), np.asarray(array).dtype):
            raise CheckpointError(
                f"checkpoint {step_dir} is damaged: {name} reads back as {np.shape(array)} "
                f"{np.asarray(array).dtype}, but was saved as {entry['shape']} {entry['dtype']}. {_others(step_dir)}"
            )
        if _sha256(np.asarray(array)) != entry["sha256"]:
            raise CheckpointError(
                f"checkpoint {step_dir} is damaged: {name} reads back with other bytes than were saved "
                f"(SHA-256 mismatch); a file under {step_dir / 'state'} was changed or truncated. {_others(step_dir)}"
            )


def _to_like(name: str, array: np.ndarray, like_leaf):
    """The restored array as the kind of leaf ``like`` holds: numpy stays numpy, jax goes to its device."""
    if isinstance(like_leaf, np.generic):
        return array[()]
    if isinstance(like_leaf, np.ndarray):
        return array
    if jax.dtypes.canonicalize_dtype(array.dtype) != array.dtype:
        raise CheckpointError(
            f"checkpoint.restore: {name} is {array.dtype}, which JAX holds only with 64-bit mode on: call "
            "jax.config.update('jax_enable_x64', True) first, or pass numpy arrays in `like` to restore it on the host."
        )
    sharding = getattr(like_leaf, "sharding", None)
    if isinstance(like_leaf, jax.Array) and not like_leaf.committed:
        sharding = None
    return jax.device_put(array, sharding) if sharding is not None else jax.device_put(array)


def restore(directory, step: int | None = None, like=None) -> tuple[Any, dict]:
    """Read checkpoint ``step`` (the latest when None): its state, bit-identical, and its metadata.

    Args:
      directory: the checkpoint directory.
      step: the step to read; the latest when None.
      like: the state a freshly built model and optimizer would have (a pytree
        of jax/numpy arrays or ``jax.ShapeDtypeStruct``), e.g. ``{"params":
        nnx.to_pure_dict(nnx.state(model, nnx.Param)), "opt_state":
        optimizer.init(params)}``. The checkpoint must hold exactly its arrays,
        with the same shapes and dtypes; the result has its structure
        (namedtuples included), jax leaves come back as jax arrays on the
        ``like`` leaf's device (or the default one), numpy leaves as numpy.
        When None, the state comes back as orbax stores it: numpy arrays in
        nested dicts and lists (namedtuples as dicts of their fields, dict keys
        as strings, empty nodes as None or ``{}``).

    Returns:
      ``(state, metadata)``.

    Raises:
      NoCheckpointError: ``directory`` holds no checkpoint (of that step).
      CheckpointError: the checkpoint does not fit ``like`` (every differing
        path is listed with its saved and expected shape or dtype), or it is
        damaged (a missing, truncated or altered file, bad JSON).
    """
    step_dir = _step_dir(directory, step)
    _check_layout(step_dir, _ITEMS)
    saved = _read_manifest(step_dir)
    metadata = _read_json(step_dir, "metadata")
    if like is None:
        target = jax.tree.map(lambda m: _template(m.shape, m.dtype), _saved_structure(step_dir))
        state = _read_arrays(step_dir, target)
        _verify(step_dir, saved, state)
        return state, metadata
    entries = _like_entries(like)
    _check_like(step_dir, saved, entries)
    target = jax.tree.unflatten(jax.tree.structure(like), [_template(shape, dtype) for _, _, shape, dtype in entries])
    restored = _read_arrays(step_dir, target)
    _verify(step_dir, saved, restored)
    arrays = jax.tree.leaves(restored)
    leaves = [_to_like(name, array, leaf) for (name, leaf, _, _), array in zip(entries, arrays, strict=True)]
    return jax.tree.unflatten(jax.tree.structure(like), leaves), metadata


__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "NoCheckpointError",
    "all_steps",
    "latest_step",
    "read_metadata",
    "restore",
    "save",
]
