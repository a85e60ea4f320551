"""``nn.Upsample``, ``nn.UpsamplingNearest2d``, ``nn.UpsamplingBilinear2d``: :func:`..functional.interpolate`."""

from __future__ import annotations

import jax
from flax import nnx

from .. import functional as F
from ..module import Module


class Upsample(Module):
    """``nn.Upsample(size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None)``.

    No parameters or buffers: ``F.interpolate`` with the stored arguments.
    """

    def __init__(
        self,
        size=None,
        scale_factor=None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        self.size = tuple(size) if isinstance(size, list | tuple) else size
        if isinstance(scale_factor, list | tuple):
            self.scale_factor = tuple(float(s) for s in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor is not None else None
        self.mode, self.align_corners, self.recompute_scale_factor = mode, align_corners, recompute_scale_factor

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.interpolate(
            input,
            self.size,
            self.scale_factor,
            self.mode,
            self.align_corners,
            recompute_scale_factor=self.recompute_scale_factor,
        )


class UpsamplingNearest2d(Upsample):
    """``nn.UpsamplingNearest2d(size=None, scale_factor=None)``: ``Upsample`` with mode ``nearest``."""

    def __init__(self, size=None, scale_factor=None, *, rngs: nnx.Rngs | None = None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """``nn.UpsamplingBilinear2d(size=None, scale_factor=None)``: mode ``bilinear`` with ``align_corners=True``."""

    def __init__(self, size=None, scale_factor=None, *, rngs: nnx.Rngs | None = None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
