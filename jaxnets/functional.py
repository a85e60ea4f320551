"""Activation functions with PyTorch's gradients at the kink.

``torch.clamp(x, min=0)`` (used by the tutorial's ``TwoLayerNet`` and
``DynamicNet``) passes the gradient where ``x >= 0``, so its gradient at exactly
0 is 1. ``torch.relu`` and ``jax.nn.relu`` have gradient 0 there, and
``jnp.maximum(x, 0)`` splits it, 0.5. The difference only shows when a
pre-activation is exactly zero, but parity checks in float64 do hit it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

relu = jax.nn.relu
"""``torch.relu`` / ``nn.ReLU``: gradient 0 at exactly 0."""


@jax.jit  # a named sub-computation, so jaxnets.graph.op_chain shows "clamp_min"
def clamp_min(x: jax.Array, min: float = 0.0) -> jax.Array:  # noqa: A002 - torch's argument name
    """``torch.clamp(x, min=min)``, with torch's gradient of 1 where ``x == min``.

    Args:
      x: any array.
      min: the lower bound.

    Returns:
      ``max(x, min)`` elementwise, same shape and dtype as ``x``.
    """
    return jnp.where(x >= min, x, jnp.asarray(min, dtype=x.dtype))
