"""torch's default initialisations (``torch.nn.init``), drawn from JAX keys.

The laws are torch's; the random streams are not (JAX and torch generators
differ), so a jaxnets.nn layer and a torch layer built with the same seed hold
different numbers from the same distribution. Load torch's ``state_dict`` to get
the same numbers; ``parity`` compares the distributions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import _draw


def uniform(key: jax.Array, shape, bound: float, dtype=jnp.float32) -> jax.Array:
    """``U(-bound, bound)``, drawn flat and reshaped (XLA:CPU compiles the flat draw faster; :mod:`jaxnets._draw`)."""
    return _draw.uniform(key, shape, dtype, bound)


def fan_in(shape) -> int:
    """torch's ``fan_in`` of a weight in torch's layout: ``shape[1]`` times the receptive field."""
    if len(shape) < 2:
        raise ValueError(f"fan_in needs a weight of at least 2 dimensions; got shape {tuple(shape)}.")
    return shape[1] * math.prod(shape[2:])


def kaiming_uniform_default(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """``kaiming_uniform_(w, a=sqrt(5))``, torch's default for Linear and ConvNd: ``U(+-1/sqrt(fan_in))``."""
    return uniform(key, shape, 1.0 / math.sqrt(fan_in(shape)), dtype)


def bias_default(key: jax.Array, shape, fan_in: int, dtype=jnp.float32) -> jax.Array:
    """torch's default bias: ``U(+-1/sqrt(fan_in))``, or zeros-width ``U(0, 0)`` when ``fan_in`` is 0."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(key, shape, bound, dtype)


def constant(shape, value, dtype=jnp.float32) -> jax.Array:
    """``shape`` filled with ``value``: torch's ``nn.init.constant_`` (``ones_``, ``zeros_``).

    Made in NumPy and put on the device, so that no program is compiled per shape (``jnp.full`` compiles one,
    ``broadcast_in_dim``, 504 of them in one run of the test suite). A dtype JAX does not hold as it is
    (``float64`` without ``jax_enable_x64``) takes ``jnp.full``, with JAX's own conversion and warning.
    """
    if dtype not in (int, float) and np.dtype(dtype) != jax.dtypes.canonicalize_dtype(dtype):
        return jnp.full(shape, value, dtype)
    return jax.device_put(np.full(shape, value, jax.dtypes.canonicalize_dtype(dtype)))


def normal(key: jax.Array, shape, dtype=jnp.float32, std: float = 1.0, *, mean: float = 0.0) -> jax.Array:
    """``N(mean, std**2)``: ``mean + std`` times a standard normal draw, torch's ``nn.init.normal_(w, mean, std)``;
    ``N(0, 1)`` is torch's default for Embedding.

    Drawn flat and reshaped by :mod:`jaxnets._draw` (one compiled program for every shape), the product with
    ``std`` and the sum with ``mean`` taken as the eager ``mean + std * jax.random.normal(...)`` takes them.
    """
    return _draw.normal(key, shape, dtype, std, mean)
