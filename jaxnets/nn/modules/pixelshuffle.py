"""``nn.PixelShuffle``, ``nn.PixelUnshuffle`` and ``nn.ChannelShuffle``: rearrangements without parameters."""

from __future__ import annotations

import jax
from flax import nnx

from .. import functional as F
from ..module import Module


class PixelShuffle(Module):
    """``nn.PixelShuffle(upscale_factor)``: ``(*, C r^2, H, W)`` to ``(*, C, H r, W r)``."""

    def __init__(self, upscale_factor: int, *, rngs: nnx.Rngs | None = None):
        self.upscale_factor = upscale_factor

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.pixel_shuffle(input, self.upscale_factor)


class PixelUnshuffle(Module):
    """``nn.PixelUnshuffle(downscale_factor)``: ``(*, C, H r, W r)`` to ``(*, C r^2, H, W)``."""

    def __init__(self, downscale_factor: int, *, rngs: nnx.Rngs | None = None):
        self.downscale_factor = downscale_factor

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.pixel_unshuffle(input, self.downscale_factor)


class ChannelShuffle(Module):
    """``nn.ChannelShuffle(groups)``: channels ``(groups, C / groups)`` transposed."""

    def __init__(self, groups: int, *, rngs: nnx.Rngs | None = None):
        self.groups = groups

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.channel_shuffle(input, self.groups)
