"""``nn.LayerNorm``, ``nn.GroupNorm``, ``nn.RMSNorm`` and ``nn.LocalResponseNorm``, as torch computes them.

LayerNorm and GroupNorm use torch's eps of 1e-5 (Flax's default is 1e-6);
RMSNorm's ``eps=None`` is torch's machine-epsilon rule, not a fixed number.
These layers are torch-mirror layers (channels-first input, torch's parameter
names); they keep no running statistics, so train and eval mode agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from .. import init
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
        self.weight = nnx.Param(init.constant(shape, 1.0, dtype)) if elementwise_affine else None
        self.bias = nnx.Param(init.constant(shape, 0.0, dtype)) if elementwise_affine and bias else None

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        weight = None if self.weight is None else self.weight[...]
        bias = None if self.bias is None else self.bias[...]
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class GroupNorm(Module):
    """``nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True, *, bias=True)``: input ``(N, C, *)``.

    ``weight`` (ones) and ``bias`` (zeros) are per channel, ``(num_channels,)``.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        bias: bool = True,
        dtype=None,
        rngs: nnx.Rngs | None = None,
    ):
        if num_groups <= 0 or num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        dtype = dtype or jnp.float32
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.weight = nnx.Param(init.constant((num_channels,), 1.0, dtype)) if affine else None
        self.bias = nnx.Param(init.constant((num_channels,), 0.0, dtype)) if affine and bias else None

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        if x.ndim >= 2 and x.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm: expected {self.num_channels} channels on dim 1 (num_channels); "
                f"got input of shape {tuple(x.shape)}."
            )
        weight = None if self.weight is None else self.weight[...]
        bias = None if self.bias is None else self.bias[...]
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


class RMSNorm(Module):
    """``nn.RMSNorm(normalized_shape, eps=None, elementwise_affine=True)`` over the last dims.

    ``eps=None`` means torch's rule: ``finfo(float64).eps`` for float64 input,
    ``finfo(float32).eps`` otherwise (see :func:`jaxnets.nn.functional.rms_norm`).
    """

    def __init__(
        self,
        normalized_shape,
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype=None,
        rngs: nnx.Rngs | None = None,
    ):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        dtype = dtype or jnp.float32
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        self.weight = nnx.Param(init.constant(shape, 1.0, dtype)) if elementwise_affine else None

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        weight = None if self.weight is None else self.weight[...]
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LocalResponseNorm(Module):
    """``nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=1.0)`` across the channels of ``(N, C, *)``."""

    def __init__(
        self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *, rngs: nnx.Rngs | None = None
    ):
        if size <= 0:
            raise ValueError(f"LocalResponseNorm: size must be positive; got size={size}.")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
