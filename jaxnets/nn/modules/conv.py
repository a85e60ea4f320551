"""``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d``: torch's layouts, padding forms and padding modes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from .. import init
from ..module import Module


class _ConvNd(Module):
    n: int = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        name = type(self).__name__
        n = self.n
        if groups <= 0:
            raise ValueError(f"{name}: groups must be a positive integer; got groups={groups}.")
        if in_channels % groups:
            raise ValueError(f"{name}: in_channels must be divisible by groups; got {in_channels} and {groups}.")
        if out_channels % groups:
            raise ValueError(f"{name}: out_channels must be divisible by groups; got {out_channels} and {groups}.")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(
                f"{name}: padding_mode must be one of 'zeros', 'reflect', 'replicate' or 'circular'; "
                f"got {padding_mode!r}."
            )
        kernel_size = F._ntuple(kernel_size, n, "kernel_size")
        stride = F._ntuple(stride, n, "stride")
        dilation = F._ntuple(dilation, n, "dilation")
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"{name}: padding {padding!r} is invalid; expected 'valid', 'same' or ints.")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions (stride={stride}).")
        else:
            padding = F._ntuple(padding, n, "padding")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.padding_mode = padding_mode
        dtype = dtype or jnp.float32
        shape = (out_channels, in_channels // groups, *kernel_size)
        fan_in = (in_channels // groups) * math.prod(kernel_size)
        self.weight = nnx.Param(
            init.kaiming_uniform_default(rngs.params(), shape, dtype) if fan_in else jnp.zeros(shape, dtype)
        )
        self.bias = nnx.Param(init.bias_default(rngs.params(), (out_channels,), fan_in, dtype)) if bias else None

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        n, name = self.n, type(self).__name__
        if x.ndim not in (n + 1, n + 2):
            raise ValueError(
                f"Expected {n + 1}D (unbatched) or {n + 2}D (batched) input to {name.lower()}, but got input of "
                f"size: {list(x.shape)}"
            )
        batched = x.ndim == n + 2
        if not batched:
            x = x[None]
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"Given groups={self.groups}, weight of size {list(self.weight[...].shape)}, expected input"
                f"{list(x.shape)} to have {self.in_channels} channels, but got {x.shape[1]} channels instead"
            )
        y = F.conv(
            x,
            self.weight[...],
            None if self.bias is None else self.bias[...],
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.padding_mode,
        )
        return y if batched else y[0]


class Conv1d(_ConvNd):
    """``nn.Conv1d``: input ``(N, C, L)`` or ``(C, L)``; ``weight`` ``(out, in / groups, k)``."""

    n = 1


class Conv2d(_ConvNd):
    """``nn.Conv2d``: input ``(N, C, H, W)`` or ``(C, H, W)``; ``weight`` ``(out, in / groups, kh, kw)``."""

    n = 2


class Conv3d(_ConvNd):
    """``nn.Conv3d``: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``; ``weight`` ``(out, in / groups, kd, kh, kw)``."""

    n = 3
