"""``nn.Flatten`` and ``nn.Unflatten``."""

from __future__ import annotations

import math

import jax
from flax import nnx

from ..module import Module


class Flatten(Module):
    """``nn.Flatten(start_dim=1, end_dim=-1)``: torch's (row-major, channels-first) order."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1, *, rngs: nnx.Rngs | None = None):
        self.start_dim, self.end_dim = start_dim, end_dim

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        if x.ndim == 0:
            return x.reshape(1)
        start, end = self.start_dim % x.ndim, self.end_dim % x.ndim
        if start > end:
            raise ValueError(
                f"Flatten: start_dim {self.start_dim} comes after end_dim {self.end_dim} for a {x.ndim}-D input."
            )
        return x.reshape(*x.shape[:start], math.prod(x.shape[start : end + 1]), *x.shape[end + 1 :])


class Unflatten(Module):
    """``nn.Unflatten(dim, unflattened_size)``."""

    def __init__(self, dim: int, unflattened_size, *, rngs: nnx.Rngs | None = None):
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        dim = self.dim % x.ndim
        return x.reshape(*x.shape[:dim], *self.unflattened_size, *x.shape[dim + 1 :])
