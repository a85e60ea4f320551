"""Max and min reductions that return NaN where the reduced values hold one, as NumPy and torch do.

XLA:CPU in jaxlib 0.10.2 hands large reductions to YNNPACK (its library fusions of type
``LIBRARY_FUSION_TYPE_REDUCE``), whose maximum and minimum drop NaN. ``jnp.max`` of 4,096 float32
values holding one NaN returned the largest of the others, eagerly and under ``jit``; 420 rows of 8
values reduced along the rows kept their NaNs, 840 rows lost every one (measured 2026-12-07; the
elementwise ``jnp.maximum`` and ``jnp.isnan(...).any()`` were right at every size). With
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT`` XLA keeps the
reductions and the NaNs; jaxnets leaves the process's flags alone, and computes the few maxima whose
torch counterpart propagates NaN through :func:`amax` and :func:`amin` instead (the infinity norms
of :mod:`jaxnets.optim` and :mod:`jaxnets.nn.functional`; the max-pools pick their NaN directly).
tests/test_extrema.py checks the sizes that lost their NaNs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def amax(a: jax.Array, axis=None, keepdims: bool = False, initial=None) -> jax.Array:
    """``jnp.max(a, axis, keepdims=keepdims, initial=initial)``, NaN wherever the reduced values hold one."""
    return _with_nans(a, jnp.max(a, axis=axis, keepdims=keepdims, initial=initial), axis, keepdims)


def amin(a: jax.Array, axis=None, keepdims: bool = False, initial=None) -> jax.Array:
    """``jnp.min(a, axis, keepdims=keepdims, initial=initial)``, NaN wherever the reduced values hold one."""
    return _with_nans(a, jnp.min(a, axis=axis, keepdims=keepdims, initial=initial), axis, keepdims)


def _with_nans(a: jax.Array, reduced: jax.Array, axis, keepdims: bool) -> jax.Array:
    if not jnp.issubdtype(jnp.result_type(a), jnp.inexact):
        return reduced
    return jnp.where(jnp.isnan(a).any(axis=axis, keepdims=keepdims), jnp.asarray(jnp.nan, reduced.dtype), reduced)
