"""``nn.MaxUnpool1d/2d/3d``: the partial inverse of max-pooling, from its ``return_indices``."""

from __future__ import annotations

import jax
from flax import nnx

from .. import functional as F
from ..module import Module


class _MaxUnpoolNd(Module):
    _n = 0

    def __init__(self, kernel_size, stride=None, padding=0, *, rngs: nnx.Rngs | None = None):
        self.kernel_size, self.stride, self.padding = (
            kernel_size,
            stride if stride is not None else kernel_size,
            padding,
        )

    def __call__(self, input: jax.Array, indices: jax.Array, output_size=None) -> jax.Array:
        name = f"max_unpool{self._n}d"
        return F.max_unpool(input, indices, self._n, self.kernel_size, self.stride, self.padding, output_size, name)


class MaxUnpool1d(_MaxUnpoolNd):
    """``nn.MaxUnpool1d(kernel_size, stride=None, padding=0)``; ``forward(input, indices, output_size=None)``."""

    _n = 1


class MaxUnpool2d(_MaxUnpoolNd):
    """``nn.MaxUnpool2d(kernel_size, stride=None, padding=0)``; ``forward(input, indices, output_size=None)``."""

    _n = 2


class MaxUnpool3d(_MaxUnpoolNd):
    """``nn.MaxUnpool3d(kernel_size, stride=None, padding=0)``; ``forward(input, indices, output_size=None)``."""

    _n = 3
