"""``nn.Unfold`` and ``nn.Fold``: sliding blocks to columns (im2col) and back (col2im, summing overlaps)."""

from __future__ import annotations

import jax
from flax import nnx

from .. import functional as F
from ..module import Module


class Fold(Module):
    """``nn.Fold(output_size, kernel_size, dilation=1, padding=0, stride=1)``."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1, *, rngs: nnx.Rngs | None = None):
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)


class Unfold(Module):
    """``nn.Unfold(kernel_size, dilation=1, padding=0, stride=1)``."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1, *, rngs: nnx.Rngs | None = None):
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)
