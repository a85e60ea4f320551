"""``nn.Identity``, ``nn.Linear`` and ``nn.Bilinear``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from .. import init
from ..module import Module


class Identity(Module):
    """``nn.Identity``: returns its input; accepts and ignores any arguments, as torch's."""

    def __init__(self, *args, rngs: nnx.Rngs | None = None, **kwargs):
        del args, kwargs, rngs

    def __call__(self, input):
        x = input
        return x


class Linear(Module):
    """``nn.Linear(in_features, out_features, bias=True)``: ``weight`` is ``(out, in)`` as in torch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, dtype=None, rngs: nnx.Rngs):
        if in_features < 0 or out_features < 0:
            raise ValueError(
                f"Linear features must be >= 0; got in_features={in_features}, out_features={out_features}."
            )
        dtype = dtype or jnp.float32
        self.in_features, self.out_features = in_features, out_features
        shape = (out_features, in_features)
        self.weight = nnx.Param(
            init.kaiming_uniform_default(rngs.params(), shape, dtype) if in_features else jnp.zeros(shape, dtype)
        )
        self.bias = nnx.Param(init.bias_default(rngs.params(), (out_features,), in_features, dtype)) if bias else None

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"Linear expected input with last dimension {self.in_features} (in_features); got shape "
                f"{tuple(x.shape)}. mat1 and mat2 shapes cannot be multiplied."
            )
        return F.linear(x, self.weight[...], None if self.bias is None else self.bias[...])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Bilinear(Module):
    """``nn.Bilinear(in1_features, in2_features, out_features, bias=True)``: ``weight`` is ``(out, in1, in2)``."""

    def __init__(
        self, in1_features: int, in2_features: int, out_features: int, bias: bool = True, *, dtype=None, rngs: nnx.Rngs
    ):
        dtype = dtype or jnp.float32
        self.in1_features, self.in2_features, self.out_features = in1_features, in2_features, out_features
        bound = 1.0 / math.sqrt(in1_features)
        self.weight = nnx.Param(init.uniform(rngs.params(), (out_features, in1_features, in2_features), bound, dtype))
        self.bias = nnx.Param(init.uniform(rngs.params(), (out_features,), bound, dtype)) if bias else None

    def __call__(self, input1: jax.Array, input2: jax.Array) -> jax.Array:
        x1, x2 = input1, input2
        if x1.shape[-1] != self.in1_features or x2.shape[-1] != self.in2_features or x1.shape[:-1] != x2.shape[:-1]:
            raise ValueError(
                f"Bilinear expected inputs (..., {self.in1_features}) and (..., {self.in2_features}) with the same "
                f"leading shape; got {tuple(x1.shape)} and {tuple(x2.shape)}."
            )
        return F.bilinear(x1, x2, self.weight[...], None if self.bias is None else self.bias[...])
