"""``nn.InstanceNorm1d/2d/3d``: per-sample, per-channel statistics, optional running estimates.

torch-mirror layers: channels-first input, batched ``(N, C, *)`` or unbatched
``(C, *)``. By default (``affine=False``, ``track_running_stats=False``) they
hold no state and normalise with each instance's own statistics in both modes.
With ``track_running_stats=True`` training moves ``running_mean`` and
``running_var`` by ``momentum`` towards the batch average of the per-instance
means and *unbiased* variances, and eval normalises with them, as torch does.
Two torch details are kept: ``num_batches_tracked`` exists but is never
counted, and ``momentum=None`` means 0 (the running statistics stay put), not
a cumulative average as in BatchNorm.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from .. import init
from ..module import Buffer, Module


class _InstanceNorm(Module):
    no_batch_dim: int = 0

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
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
            self.num_batches_tracked = Buffer(init.constant((), 0, int))  # torch keeps it and never counts
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        name = type(self).__name__
        if x.ndim not in (self.no_batch_dim, self.no_batch_dim + 1):
            raise ValueError(
                f"{name}: expected {self.no_batch_dim}D or {self.no_batch_dim + 1}D input (got {x.ndim}D input)"
            )
        feature_dim = x.ndim - self.no_batch_dim
        if x.shape[feature_dim] != self.num_features:
            if self.affine:
                raise ValueError(
                    f"{name}: expected input's size at dim={feature_dim} to match num_features "
                    f"({self.num_features}), but got: {x.shape[feature_dim]}."
                )
            warnings.warn(
                f"input's size at dim={feature_dim} does not match num_features. You can silence this warning by "
                "not passing in num_features, which is not used because affine=False",
                stacklevel=2,
            )
        unbatched = x.ndim == self.no_batch_dim
        if unbatched:
            x = x[None]
        use_input_stats = self.training or not self.track_running_stats
        mean = None if self.running_mean is None else self.running_mean[...]
        var = None if self.running_var is None else self.running_var[...]
        weight = None if self.weight is None else self.weight[...]
        bias = None if self.bias is None else self.bias[...]
        momentum = 0.0 if self.momentum is None else self.momentum
        y, new_mean, new_var = F.instance_norm(x, mean, var, weight, bias, use_input_stats, momentum, self.eps)
        if use_input_stats and mean is not None:
            self.running_mean[...] = new_mean
            self.running_var[...] = new_var
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class InstanceNorm1d(_InstanceNorm):
    """``nn.InstanceNorm1d(num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False)``.

    Input ``(N, C, L)`` or unbatched ``(C, L)``.
    """

    no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    """``nn.InstanceNorm2d``: input ``(N, C, H, W)`` or unbatched ``(C, H, W)``."""

    no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    """``nn.InstanceNorm3d``: input ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``."""

    no_batch_dim = 4
