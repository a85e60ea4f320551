"""Pooling: ``nn.MaxPoolNd``, ``nn.AvgPoolNd``, ``nn.AdaptiveAvgPoolNd``, ``nn.AdaptiveMaxPoolNd``, ``nn.LPPoolNd``.

Channels first, batched or not, as torch. The functions are in
:mod:`jaxnets.nn.functional` (``max_pool2d``...); see there for the tie-break
rule of the max-pools (the first maximal element in torch's scan order).
"""

from __future__ import annotations

import jax
from flax import nnx

from .. import functional as F
from ..module import Module


class _MaxPoolNd(Module):
    n: int = 2

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        return_indices: bool = False,
        ceil_mode: bool = False,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def __call__(self, input: jax.Array):
        return F.max_pool(
            input,
            self.n,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.return_indices,
            type(self).__name__,
        )

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class MaxPool1d(_MaxPoolNd):
    """``nn.MaxPool1d``: input ``(N, C, L)`` or ``(C, L)``."""

    n = 1


class MaxPool2d(_MaxPoolNd):
    """``nn.MaxPool2d``: input ``(N, C, H, W)`` or ``(C, H, W)``."""

    n = 2


class MaxPool3d(_MaxPoolNd):
    """``nn.MaxPool3d``: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""

    n = 3


class _AvgPoolNd(Module):
    n: int = 2

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.avg_pool(
            input,
            self.n,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
            type(self).__name__,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """``nn.AvgPool1d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)``."""

    n = 1

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, None)


class AvgPool2d(_AvgPoolNd):
    """``nn.AvgPool2d``: input ``(N, C, H, W)`` or ``(C, H, W)``."""

    n = 2


class AvgPool3d(_AvgPoolNd):
    """``nn.AvgPool3d``: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""

    n = 3


class _AdaptiveAvgPoolNd(Module):
    n: int = 2

    def __init__(self, output_size, *, rngs: nnx.Rngs | None = None):
        self.output_size = output_size

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.adaptive_avg_pool(input, self.n, self.output_size, type(self).__name__)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """``nn.AdaptiveAvgPool1d(output_size)``."""

    n = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """``nn.AdaptiveAvgPool2d(output_size)``; a ``None`` entry keeps that input size."""

    n = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """``nn.AdaptiveAvgPool3d(output_size)``; a ``None`` entry keeps that input size."""

    n = 3


class _AdaptiveMaxPoolNd(Module):
    n: int = 2

    def __init__(self, output_size, return_indices: bool = False, *, rngs: nnx.Rngs | None = None):
        self.output_size, self.return_indices = output_size, return_indices

    def __call__(self, input: jax.Array):
        return F.adaptive_max_pool(input, self.n, self.output_size, self.return_indices, type(self).__name__)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """``nn.AdaptiveMaxPool1d(output_size, return_indices=False)``."""

    n = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """``nn.AdaptiveMaxPool2d(output_size, return_indices=False)``."""

    n = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """``nn.AdaptiveMaxPool3d(output_size, return_indices=False)``."""

    n = 3


class _LPPoolNd(Module):
    n: int = 2

    def __init__(self, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False, *, rngs=None):
        self.norm_type, self.kernel_size, self.stride, self.ceil_mode = norm_type, kernel_size, stride, ceil_mode

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.lp_pool(
            input, self.n, self.norm_type, self.kernel_size, self.stride, self.ceil_mode, type(self).__name__
        )

    def extra_repr(self) -> str:
        return f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}"


class LPPool1d(_LPPoolNd):
    """``nn.LPPool1d(norm_type, kernel_size, stride=None, ceil_mode=False)``."""

    n = 1


class LPPool2d(_LPPoolNd):
    """``nn.LPPool2d(norm_type, kernel_size, stride=None, ceil_mode=False)``."""

    n = 2


class LPPool3d(_LPPoolNd):
    """``nn.LPPool3d(norm_type, kernel_size, stride=None, ceil_mode=False)``."""

    n = 3
