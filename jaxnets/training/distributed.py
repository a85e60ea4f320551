"""Data parallelism with ``jax.sharding``: one mesh axis, the batch split along it, everything else replicated.

The engine is JAX's own SPMD partitioning: a :class:`jax.sharding.Mesh` of the
devices with one axis named ``"data"``, the batch placed with
``NamedSharding(mesh, P("data"))`` (each device holds ``batch / n`` examples),
parameters and optimizer state with ``NamedSharding(mesh, P())`` (a full copy
on every device). ``jax.jit`` then compiles the ordinary single-device train
step for the whole mesh: XLA inserts the all-reduce that averages gradients
over devices, so every device applies the same update and the replicas stay
identical. :class:`jaxnets.Trainer` does this when given ``mesh=``.

On one device the same code runs unchanged (a mesh of one device). On a CPU,
several devices can be simulated for testing with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (or
``JAX_NUM_CPU_DEVICES=4``), set before JAX starts.

Several hosts (processes): call :func:`initialize` first in every process (it
wraps ``jax.distributed.initialize``); :func:`mesh` then spans the devices of
all processes, and every process feeds the same global arrays through
:func:`replicate` and :func:`shard_batch`, which build them from the values
each process holds (every process computes the same global batch indices from
the same seed and keeps only what its own devices need).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
"""The name of the mesh axis the batch is split along."""


def mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named :data:`DATA` over ``devices``.

    Args:
      devices: how many of ``jax.devices()`` to use (the first ``n``), the
        devices themselves, or None for every visible device (of every process).

    Raises:
      ValueError: more devices asked for than are visible (the message says how
        to simulate CPU devices), or a count below 1.
    """
    visible = jax.devices()
    if devices is None:
        chosen = visible
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1:
            raise ValueError(f"the number of devices must be at least 1; got {devices}.")
        if devices > len(visible):
            hint = (
                " On a CPU, simulate devices by setting XLA_FLAGS=--xla_force_host_platform_device_count="
                f"{devices} (or JAX_NUM_CPU_DEVICES={devices}) before JAX starts."
                if visible[0].platform == "cpu"
                else ""
            )
            raise ValueError(
                f"asked for {devices} devices but {len(visible)} are visible ({visible[0].platform}).{hint}"
            )
        if jax.process_count() > 1 and devices != len(visible):
            raise ValueError(
                f"with {jax.process_count()} processes, use every visible device ({len(visible)}); got {devices}."
            )
        chosen = visible[:devices]
    else:
        chosen = list(devices)
    return jax.make_mesh((len(chosen),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,), devices=chosen)


def replicated(m: Mesh) -> NamedSharding:
    """A full copy on every device of ``m``: parameters, optimizer state, a small data set."""
    return NamedSharding(m, P())


def batch_sharding(m: Mesh) -> NamedSharding:
    """The leading (batch) axis split over :data:`DATA`."""
    return NamedSharding(m, P(DATA))


def _global(value, sharding: NamedSharding) -> jax.Array:
    """A global array from a value every process holds in full; each process fills only its own devices."""
    if isinstance(value, jax.Array) and value.sharding == sharding:
        return value
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(m: Mesh, tree):
    """Every array leaf of ``tree`` copied onto every device of ``m``."""
    return jax.tree.map(lambda x: _global(x, replicated(m)), tree)


def shard_batch(m: Mesh, *arrays):
    """Split the leading axis of each array evenly over the devices of ``m``.

    Every process passes the whole global batch; each keeps its devices' part.

    Raises:
      ValueError: a leading axis that the number of devices does not divide
        (the message gives the sizes that do).
    """
    n = m.devices.size
    out = []
    for i, a in enumerate(arrays):
        size = np.shape(a)[0] if np.ndim(a) else None
        if size is None or size % n:
            raise ValueError(
                f"a batch of {size} examples (argument {i}, shape {np.shape(a)}) cannot be split evenly over {n} "
                f"devices: use a batch size that is a multiple of {n} (e.g. {max(n, (size or 0) // n * n)}), "
                "or fewer devices."
            )
        out.append(_global(a, batch_sharding(m)))
    return out[0] if len(out) == 1 else tuple(out)


ENV = {
    "coordinator_address": "JAXNETS_COORDINATOR",
    "num_processes": "JAXNETS_NUM_PROCESSES",
    "process_id": "JAXNETS_PROCESS_ID",
}
"""Environment variables :func:`initialize` reads when its arguments are None."""


def initialize(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Start multi-process JAX (``jax.distributed.initialize``) when a coordinator is given.

    Each argument falls back to its environment variable in :data:`ENV`
    (``JAXNETS_COORDINATOR=host:port``, ``JAXNETS_NUM_PROCESSES``,
    ``JAXNETS_PROCESS_ID``). On a CPU the processes exchange gradients through
    gloo collectives. Call it before anything else touches JAX devices.

    Returns:
      True when multi-process JAX was started, False when no coordinator was
      given (a single process: nothing to do).

    Raises:
      ValueError: a coordinator without the number of processes or this
        process's id, or those without a coordinator.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV["coordinator_address"]) or None
    if coordinator_address is None:
        given = [f"--{k.replace('_', '-')} {v}" for k, v in (("num_processes", num_processes),
                 ("process_id", process_id)) if v is not None]  # fmt: skip
        if given:
            raise ValueError(
                f"{' and '.join(given)} without a coordinator: pass --coordinator HOST:PORT as well (process 0's "
                f"host and a free port, the same in every process; or set {ENV['coordinator_address']})."
            )
        return False
    values = {"num_processes": num_processes, "process_id": process_id}
    for name, value in list(values.items()):
        if value is None and os.environ.get(ENV[name]):
            values[name] = int(os.environ[ENV[name]])
        if values[name] is None:
            raise ValueError(
                f"a coordinator ({coordinator_address}) needs the number of processes and this process's id: "
                f"pass --num-processes and --process-id (or set {ENV['num_processes']} and {ENV['process_id']})."
            )
    if not 0 <= values["process_id"] < values["num_processes"]:
        raise ValueError(
            f"process id {values['process_id']} is outside 0..{values['num_processes'] - 1} "
            f"for {values['num_processes']} processes."
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, values["num_processes"], values["process_id"])
    return True
