"""``nn.LayerNorm``, with torch's eps of 1e-5 (Flax's default is 1e-6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from ..module import Module


class LayerNorm(Module):
    """``nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)``."""

    def __init__(
        self,
        normalized_shape,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype=None,
        rngs: nnx.Rngs | None = None,
    ):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        dtype = dtype or jnp.float32
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        self.weight = nnx.Param(jnp.ones(shape, dtype)) if elementwise_affine else None
        self.bias = nnx.Param(jnp.zeros(shape, dtype)) if elementwise_affine and bias else None

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        weight = None if self.weight is None else self.weight[...]
        bias = None if self.bias is None else self.bias[...]
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)
