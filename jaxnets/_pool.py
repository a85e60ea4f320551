"""torch's max-pool pick rule, for the torch-mirror pools (:mod:`jaxnets.nn.functional`) and LeNet's fast path.

Its own module so that LeNet (:mod:`jaxnets.models._fastconv`) does not import :mod:`jaxnets.nn`, the
torch-mirror layers, which ``jaxnets train`` does not use. Measured 2026-12-06 (cached bytecode, under the
lock, 6 processes each): importing ``jaxnets.training.digits`` after jax, flax and optax took 28 to 40 ms,
median 29.8 ms, before and 15 to 21 ms, median 15.9 ms, after.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def max_pool_pick(wins: jax.Array, y: jax.Array, axes: Sequence[int], *, nans: bool = True, valid=None) -> jax.Array:
    """True at the element of each window that torch's max-pool picks (its value, and its gradient's target).

    torch's CPU kernels scan a window in row-major order and replace the running
    maximum by a larger element or by a NaN: the pick is the first maximal
    element, or, in a window holding a NaN, the last NaN. The one definition of
    that rule in jaxnets, used by the torch-mirror pools (:func:`max_pool`,
    :func:`adaptive_max_pool`: windows gathered along the last axis) and by
    LeNet's fast path (:func:`jaxnets.models._fastconv.max_pool2d` and
    :func:`~jaxnets.models._fastconv.conv2d_relu_max_pool2d`: 2x2 windows
    reshaped in place, on axes 2 and 4 of ``(C, Hp, 2, Wp, 2, N)``). It has no
    gradient and leaves forward mode to the callers. Windows of at most 8
    elements are compared slice by slice, elementwise ops that XLA:CPU fuses
    into the consumer (the fast path's backward loop); larger ones go through
    ``argmax``.

    Args:
      wins: the windows; the window's own dims are ``axes``, the rest index windows.
      y: each window's maximum, ``wins`` reduced over ``axes`` by ``jnp.max``, with or
        without ``axes`` kept as size-1 dims. Read only in windows without a NaN, so it
        may be ``jnp.max``'s value where that dropped the window's NaN.
      axes: the window dims of ``wins``, in torch's scan order (the outermost first).
      nans: apply the NaN rule. ``False`` where the element a NaN window picks cannot
        matter, as for a max-pool after a ReLU: ReLU's gradient is zero at NaN in torch
        and in JAX, so whichever element takes the pool's gradient passes on zero. A NaN
        window then picks no element, and the rule's extra elementwise work is not done
        (LeNet's fast train step at batch 1: about 130 us with it, 95 us without).
      valid: None, or a boolean array broadcastable to ``wins``: False at padding, which
        torch's kernels never scan, so it is never picked (a window of padding and
        real -inf values picks its first real element, as torch does). Every window
        must hold a real element.

    Returns:
      A boolean array of ``wins``'s shape, True at one element of each window (at
      most one with ``nans=False``).
    """
    axes = tuple(ax % wins.ndim for ax in axes)
    if y.ndim != wins.ndim:
        y = jnp.expand_dims(y, axes)
    sizes = [wins.shape[ax] for ax in axes]
    pos = np.zeros([1] * wins.ndim, np.int32)  # each element's row-major position in its window
    for ax, size in zip(axes, sizes, strict=True):
        pos = pos * size + np.arange(size, dtype=np.int32).reshape([size if d == ax else 1 for d in range(wins.ndim)])
    # The candidates: every maximal element, or every NaN of a window that holds one. Whether a window holds
    # a NaN is read from the window itself, not from y: XLA:CPU's YNNPACK reductions drop NaN from the
    # maximum of large arrays (jaxnets._extrema), and a window's maximum may then be a number.
    hit = wins == y
    if nans:
        isnan = jnp.isnan(wins)
        nan = isnan.any(axis=axes, keepdims=True)
        hit = jnp.where(nan, isnan, hit)
    if valid is not None:
        hit = hit & valid
    count = math.prod(sizes)
    if count == 1:
        return hit
    if count <= 8:
        earlier = later = None  # a candidate before / after each element in scan order
        for q, idx in enumerate(np.ndindex(*sizes)):
            sl = [slice(None)] * wins.ndim
            for ax, i in zip(axes, idx, strict=True):
                sl[ax] = slice(i, i + 1)
            hit_q = hit[tuple(sl)]
            if q < count - 1:  # the last element precedes none
                term = hit_q & jnp.asarray(pos > q)
                earlier = term if earlier is None else earlier | term
            if nans and q > 0:  # the first element follows none
                term = hit_q & jnp.asarray(pos < q)
                later = term if later is None else later | term
        return hit & ~(jnp.where(nan, later, earlier) if nans else earlier)
    flat = jnp.moveaxis(hit, axes, range(-len(axes), 0)).reshape(
        *[d for i, d in enumerate(hit.shape) if i not in axes], -1
    )
    first = jnp.argmax(flat, axis=-1)
    last = flat.shape[-1] - 1 - jnp.argmax(flat[..., ::-1], axis=-1)
    pick = jnp.where(jnp.squeeze(nan, axes), last, first) if nans else first
    picked = pos == jnp.expand_dims(pick, axes).astype(np.int32)
    return picked if nans else hit & picked  # without the NaN rule a NaN window has no hit: nothing picked
