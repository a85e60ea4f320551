"""Compiled inference: a model's forward pass on one batch, or on many batches in one compiled loop.

PyTorch counterpart: ``with torch.no_grad(): out = model(x)``, in a Python loop
over a ``DataLoader``. Here the loop can be compiled too: :func:`apply_batches`
runs the forward pass of ``K`` batches stacked as ``(K, B, ...)`` in one
``lax.map``, one dispatch for all of them. For small batches most of a single
call's time is the host's (Python, argument handling, launching a dozen tiny
kernels); the compiled loop pays that once.

The compiled functions are cached per model structure (``nnx.graphdef``), so a
model is traced once per input shape however often it is evaluated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


@functools.cache
def forward(graphdef) -> Callable:
    """``jax.jit`` of ``(state, x) -> model(x)`` for models of structure ``graphdef`` (from ``nnx.split``)."""
    return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))


@functools.cache
def forward_batches(graphdef) -> Callable:
    """``jax.jit`` of ``(state, xs) -> stack([model(xs[k]) for k in range(K)])``, the loop compiled (``lax.map``).

    The batches run one after another, each as :func:`forward` would run it, so
    the outputs are the same (up to XLA's choice of kernels).
    """
    return jax.jit(lambda state, xs: jax.lax.map(nnx.merge(graphdef, state), xs))


def apply_batches(model: nnx.Module, xs: jax.Array) -> jax.Array:
    """The model's outputs for ``K`` batches at once, in one compiled loop.

    Args:
      model: any ``nnx.Module`` that maps one batch to its outputs.
      xs: ``(K, B, ...)``: ``K`` batches of the shape ``model`` takes, e.g.
        ``(K, B, 32, 32, 1)`` for LeNet.

    Returns:
      ``(K, B, ...)``: ``model(xs[k])`` for every ``k``.
    """
    if jnp.ndim(xs) < 2 or jnp.shape(xs)[0] == 0:
        raise ValueError(
            "apply_batches: `xs` must stack at least one batch along a leading axis, e.g. (K, B, 32, 32, 1) "
            f"for LeNet; got shape {jnp.shape(xs)}. For a single batch x, pass x[None]."
        )
    graphdef, state = nnx.split(model)
    return forward_batches(graphdef)(state, xs)
