"""``nn.Dropout``: torch's ``1 / (1 - p)`` scaling, active in training mode only."""

from __future__ import annotations

import jax
from flax import nnx

from .. import functional as F
from ..module import Module


class Dropout(Module):
    """``nn.Dropout(p=0.5)``. Masks come from ``rngs``' ``dropout`` stream (or its default stream).

    torch draws masks from its global generator, so the two never draw the same
    mask: compare a torch and a jaxnets model in ``eval()`` mode, or hand both the
    same mask with :func:`jaxnets.nn.functional.dropout`'s arithmetic.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace
        self.rngs = rngs

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        if not self.training or self.p == 0 or self.p == 1:
            return F.dropout(x, self.p, self.training)
        if self.rngs is None:
            raise ValueError(
                "Dropout in training mode needs random keys: build it with rngs=nnx.Rngs(seed), or call .eval()."
            )
        return F.dropout(x, self.p, True, key=self.rngs.dropout())
