"""Reading checkpoints of format 1, which jaxnets wrote with orbax until format 2 replaced it.

A format-1 step directory holds three orbax items::

    DIR/3/state/     the arrays (orbax StandardSave: zarr in an OCDBT store)
    DIR/3/metadata/  the metadata dict (orbax JsonSave)
    DIR/3/manifest/  every array's path, shape, dtype and SHA-256 (orbax JsonSave)

Only :mod:`jaxnets.checkpoint` calls this module, and only for such a directory:
orbax (and tensorstore) are imported here, so a run that never reads an old
checkpoint never loads them. The hash check is the same as for format 2.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp

ITEMS = ("state", "metadata", "manifest")
# How long a failed orbax call keeps muting tensorstore's late callbacks (they come within a millisecond).
_DRAIN_SECONDS = 0.1


@contextlib.contextmanager
def _orbax_call():
    """Mute the "Event loop is closed" errors tensorstore reports after a failed orbax read.

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


def _reader() -> ocp.Checkpointer:
    """An orbax reader of one step directory, local to this process (no cross-process barriers)."""
    if jax.process_count() == 1:
        options = ocp.options.MultiprocessingOptions()
    else:
        index = jax.process_index()
        options = ocp.options.MultiprocessingOptions(primary_host=index, active_processes={index})
    registry = ocp.DefaultCheckpointHandlerRegistry()
    registry.add("state", ocp.args.StandardRestore, ocp.StandardCheckpointHandler(multiprocessing_options=options))
    for item in ("metadata", "manifest"):
        registry.add(item, ocp.args.JsonRestore, ocp.JsonCheckpointHandler(multiprocessing_options=options))
    composite = ocp.CompositeCheckpointHandler(
        handler_registry=registry, composite_options=ocp.CompositeOptions(multiprocessing_options=options)
    )
    return ocp.Checkpointer(composite, multiprocessing_options=options)


def read_json(step_dir: Path, item: str):
    """The JSON item ``metadata`` or ``manifest``; orbax's and JSON's errors propagate."""
    with _orbax_call():
        return _reader().restore(step_dir, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]


def read_arrays(step_dir: Path, target):
    """The arrays of ``state`` read into numpy, with the structure of ``target``."""
    with _orbax_call():
        return _reader().restore(step_dir, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]


def saved_structure(step_dir: Path):
    """The saved tree of array metadata (each with ``shape`` and ``dtype``), as orbax records it."""
    with _orbax_call():
        return _reader().metadata(step_dir).item_metadata["state"].tree
