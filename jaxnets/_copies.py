"""Private copies of arrays without an XLA program: what the trainer keeps and what a stored program first runs on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def private_copy(x):
    """A copy of ``x`` that no one else holds, safe to donate: a fresh NumPy copy, put on a device by the caller.

    Through NumPy, not ``jnp.array(x, copy=True)``: that is an XLA program per shape and dtype, traced and
    lowered in every process even when the persistent cache holds it (eleven for LeNet and Adam, 0.05 to
    0.08 s of a warm ``jaxnets train`` start). PRNG keys, weakly typed arrays and Python scalars keep the jnp
    copy: NumPy has no key dtype and no weak type, and a weak scalar made strong would change what the step
    promotes to.
    """
    if isinstance(x, jax.Array) and not x.aval.weak_type:
        return host_copy(x)
    return jnp.array(x, copy=True)


def host_copy(x):
    """A NumPy copy of an array leaf; a PRNG key stays a (copied) JAX array."""
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jnp.array(x, copy=True)
    return np.array(x)
