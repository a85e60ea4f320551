"""``nn.Dropout`` and its channel-wise and alpha variants: torch's scaling, active in training mode only.

torch draws masks from its global generator, so a torch model and its port
never draw the same mask: compare them in ``eval()`` mode (``parity.compare``
refuses train mode while any dropout is active), or hand both the same keep
mask through the ``mask=`` argument of :mod:`jaxnets.nn.functional`'s dropouts.
"""

from __future__ import annotations

import jax
from flax import nnx

from .. import functional as F
from ..module import Module


class _DropoutNd(Module):
    """The shared constructor of the dropout layers, as torch's ``_DropoutNd``.

    Masks come from ``rngs``' ``dropout`` stream (or its default stream); only
    training mode with ``0 < p < 1`` needs ``rngs``.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace
        self.rngs = rngs

    def _key(self) -> jax.Array | None:
        if not self.training or self.p == 0 or self.p == 1:
            return None
        if self.rngs is None:
            raise ValueError(
                f"{type(self).__name__} in training mode needs random keys: build it with rngs=nnx.Rngs(seed), "
                "or call .eval()."
            )
        return self.rngs.dropout()

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """``nn.Dropout(p=0.5)``: zero each element with probability ``p``, scale the rest by ``1 / (1 - p)``."""

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.dropout(input, self.p, self.training, key=self._key())


class Dropout1d(_DropoutNd):
    """``nn.Dropout1d(p=0.5)``: zero whole channels of ``(N, C, L)`` or ``(C, L)`` input, scale by ``1 / (1 - p)``."""

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.dropout1d(input, self.p, self.training, key=self._key())


class Dropout2d(_DropoutNd):
    """``nn.Dropout2d(p=0.5)``: zero whole channels of ``(N, C, H, W)`` input (3D input is read as ``(N, C, L)``)."""

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.dropout2d(input, self.p, self.training, key=self._key())


class Dropout3d(_DropoutNd):
    """``nn.Dropout3d(p=0.5)``: zero whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)`` input."""

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.dropout3d(input, self.p, self.training, key=self._key())


class AlphaDropout(_DropoutNd):
    """``nn.AlphaDropout(p=0.5)``: dropout for SELU networks that keeps mean 0 and variance 1 (``F.alpha_dropout``)."""

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.alpha_dropout(input, self.p, self.training, key=self._key())


class FeatureAlphaDropout(_DropoutNd):
    """``nn.FeatureAlphaDropout(p=0.5)``: :class:`AlphaDropout` with one mask entry per (sample, channel)."""

    def __call__(self, input: jax.Array) -> jax.Array:
        return F.feature_alpha_dropout(input, self.p, self.training, key=self._key())
