"""``nn.PairwiseDistance`` and ``nn.CosineSimilarity``."""

from __future__ import annotations

import jax
from flax import nnx

from .. import functional as F
from ..module import Module


class PairwiseDistance(Module):
    """``nn.PairwiseDistance(p=2.0, eps=1e-6, keepdim=False)``: ``||x1 - x2 + eps||_p`` over the last dim."""

    def __init__(self, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False, *, rngs: nnx.Rngs | None = None):
        self.norm, self.eps, self.keepdim = p, eps, keepdim

    def __call__(self, x1: jax.Array, x2: jax.Array) -> jax.Array:
        return F.pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)


class CosineSimilarity(Module):
    """``nn.CosineSimilarity(dim=1, eps=1e-8)``."""

    def __init__(self, dim: int = 1, eps: float = 1e-8, *, rngs: nnx.Rngs | None = None):
        self.dim, self.eps = dim, eps

    def __call__(self, x1: jax.Array, x2: jax.Array) -> jax.Array:
        return F.cosine_similarity(x1, x2, self.dim, self.eps)
