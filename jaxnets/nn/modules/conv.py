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


class _ConvTransposeNd(Module):
    n: int = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
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
        if padding_mode != "zeros":
            raise ValueError(f'{name}: only "zeros" padding_mode is supported (as torch); got {padding_mode!r}.')
        if isinstance(padding, str):
            raise ValueError(f"{name}: padding must be ints for a transposed convolution; got {padding!r}.")
        kernel_size = F._ntuple(kernel_size, n, "kernel_size")
        stride = F._ntuple(stride, n, "stride")
        padding = F._ntuple(padding, n, "padding")
        dilation = F._ntuple(dilation, n, "dilation")
        output_padding = F._ntuple(output_padding, n, "output_padding")
        for o, s, d in zip(output_padding, stride, dilation, strict=True):
            if not (o < s or o < d):
                raise ValueError(
                    f"{name}: output padding must be smaller than either stride or dilation; got output_padding="
                    f"{output_padding}, stride={stride}, dilation={dilation}."
                )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.output_padding, self.padding_mode = output_padding, padding_mode
        dtype = dtype or jnp.float32
        shape = (in_channels, out_channels // groups, *kernel_size)
        # torch's _calculate_fan_in_and_fan_out on this weight: fan_in = weight.size(1) * receptive field.
        fan_in = (out_channels // groups) * math.prod(kernel_size)
        self.weight = nnx.Param(
            init.kaiming_uniform_default(rngs.params(), shape, dtype) if fan_in else jnp.zeros(shape, dtype)
        )
        self.bias = nnx.Param(init.bias_default(rngs.params(), (out_channels,), fan_in, dtype)) if bias else None

    def _output_padding(self, x: jax.Array, output_size) -> tuple[int, ...]:
        """torch's ``_output_padding``: the extra size that reaches ``output_size`` (spatial sizes, or with N, C)."""
        if output_size is None:
            return self.output_padding
        n, name = self.n, type(self).__name__
        output_size = list(output_size)
        if len(output_size) == n + 2 or (len(output_size) == n + 1 and x.ndim == n + 1):
            output_size = output_size[-n:]
        if len(output_size) != n:
            raise ValueError(f"{name}: output_size must have {n} or {n + 2} elements; got {output_size}.")
        pads = []
        for d in range(n):
            size = x.shape[x.ndim - n + d]
            lo = (size - 1) * self.stride[d] - 2 * self.padding[d] + self.dilation[d] * (self.kernel_size[d] - 1) + 1
            hi = lo + self.stride[d] - 1
            if not lo <= output_size[d] <= hi:
                raise ValueError(
                    f"{name}: requested an output size of {output_size}, but valid sizes range from {lo} to {hi} "
                    f"(for an input of {list(x.shape[-n:])})."
                )
            pads.append(output_size[d] - lo)
        return tuple(pads)

    def __call__(self, input: jax.Array, output_size=None) -> jax.Array:
        x = input
        n, name = self.n, type(self).__name__
        if x.ndim not in (n + 1, n + 2):
            raise ValueError(
                f"Expected {n + 1}D (unbatched) or {n + 2}D (batched) input to {name.lower()}, but got input of "
                f"size: {list(x.shape)}"
            )
        channels = x.shape[-n - 1]
        if channels != self.in_channels:
            raise ValueError(
                f"Given transposed=1, weight of size {list(self.weight[...].shape)}, expected input {list(x.shape)} "
                f"to have {self.in_channels} channels, but got {channels} channels instead"
            )
        output_padding = self._output_padding(x, output_size)
        batched = x.ndim == n + 2
        y = F.conv_transpose(
            x if batched else x[None],
            self.weight[...],
            None if self.bias is None else self.bias[...],
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )
        return y if batched else y[0]


class ConvTranspose1d(_ConvTransposeNd):
    """``nn.ConvTranspose1d``: input ``(N, C, L)`` or ``(C, L)``; ``weight`` ``(in, out / groups, k)``."""

    n = 1


class ConvTranspose2d(_ConvTransposeNd):
    """``nn.ConvTranspose2d``: input ``(N, C, H, W)`` or ``(C, H, W)``; ``weight`` ``(in, out / groups, kh, kw)``."""

    n = 2


class ConvTranspose3d(_ConvTransposeNd):
    """``nn.ConvTranspose3d``: input ``(N, C, D, H, W)``; ``weight`` ``(in, out / groups, kd, kh, kw)``."""

    n = 3
