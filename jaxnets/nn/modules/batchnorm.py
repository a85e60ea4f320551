"""``nn.BatchNorm1d/2d/3d`` with torch's momentum convention and unbiased running variance.

torch's ``momentum=0.1`` moves the running statistics 10% of the way to each
batch's (Flax's ``momentum=0.9`` says the same from the other side), the running
variance takes the *unbiased* batch variance while the batch is normalised with
the biased one, ``momentum=None`` means a cumulative average, and
``num_batches_tracked`` counts training batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from .. import init
from ..module import Buffer, Module


class _BatchNorm(Module):
    ranks: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
        dtype=None,
        rngs: nnx.Rngs | None = None,
    ):
        dtype = dtype or jnp.float32
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = nnx.Param(init.constant((num_features,), 1.0, dtype)) if affine else None
        self.bias = nnx.Param(init.constant((num_features,), 0.0, dtype)) if affine and bias else None
        if track_running_stats:
            self.running_mean = Buffer(init.constant((num_features,), 0.0, dtype))
            self.running_var = Buffer(init.constant((num_features,), 1.0, dtype))
            self.num_batches_tracked = Buffer(init.constant((), 0, int))  # torch's int64; int32 unless jax_enable_x64
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        if x.ndim not in self.ranks:
            expected = " or ".join(f"{r}D" for r in self.ranks)
            raise ValueError(f"{type(self).__name__}: expected {expected} input (got {x.ndim}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}: expected {self.num_features} channels on dim 1 (num_features); "
                f"got input of shape {tuple(x.shape)}."
            )
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / self.num_batches_tracked[...].astype(x.dtype)
        use_batch_stats = self.training or not self.track_running_stats
        tracked = not self.training or self.track_running_stats
        mean = self.running_mean[...] if tracked and self.running_mean is not None else None
        var = self.running_var[...] if tracked and self.running_var is not None else None
        weight = None if self.weight is None else self.weight[...]
        bias = None if self.bias is None else self.bias[...]
        y, new_mean, new_var = F.batch_norm(x, mean, var, weight, bias, use_batch_stats, momentum, self.eps)
        if use_batch_stats and mean is not None:
            self.running_mean[...] = new_mean
            self.running_var[...] = new_var
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """``nn.BatchNorm1d``: input ``(N, C)`` or ``(N, C, L)``."""

    ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """``nn.BatchNorm2d``: input ``(N, C, H, W)``."""

    ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """``nn.BatchNorm3d``: input ``(N, C, D, H, W)``."""

    ranks = (5,)
