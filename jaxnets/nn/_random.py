"""Dropout's keep masks: ``jax.random.bits``' threefry words hashed in line, once, packed 32 to a word.

``jax.random.bernoulli(key, 1 - p, shape)`` draws a float32 uniform per
element (23 random bits) and compares it with ``1 - p``. On CPU, JAX lowers
its threefry hash as a rolled five-step loop (``threefry2x32``'s CPU lowering),
so the bits land in memory before anything uses them. :func:`keep_mask`
computes the same 32-bit words ``jax.random.bits(key, shape, jnp.uint32)``
draws (threefry-2x32 of ``(0, flat index)`` under the key, the two output words
XORed: JAX's ``jax_threefry_partitionable`` scheme, the default since JAX 0.5)
with the twenty rounds written out, and compares them with an integer threshold,
so XLA fuses the hash with the code around it. Measured on the 2-core CPU
of docs/benchmark.md, a mask over 1M float32 elements, applied: 2.1-2.3 ms with
``bernoulli``, 0.90-0.95 ms in line.

Fused in line, XLA recomputed the hash in every user of the mask: the
dropout's multiply, its gradient, and the transposes feeding the weight
gradients (the Transformer benchmark's step hashed 10.5M elements for its
4.4M-element masks, 18 ms of its 87 ms of kernel time).
:func:`keep_mask` therefore packs the mask into ``uint32`` words, 32 elements
each, with a sum (a reduction, which XLA's CPU fusion does not duplicate into
its consumers), and unpacks it where it is used: the hash runs once per
element. Over 1M elements: 0.86-0.89 ms to hash and pack, 0.12-0.15 ms to
unpack and apply, against 0.81-0.95 ms per fused recomputation. The
Transformer step (one process, 30 alternating rounds of 5 steps, with the
attention change of the same branch) went from 62.0 / 64.4 to 55.4 / 59.9 ms
(min / median); its hashing fusions from 24 to 9, 18 to 7.3 ms.
(``jax.lax.optimization_barrier`` does not do this: XLA's CPU pipeline
removes it before fusion.)

The drop probability is ``p`` rounded to the nearest multiple of ``2**-32``
(kept in ``[2**-32, 1 - 2**-32]`` for ``0 < p < 1``; exact at 0 and 1), finer than ``bernoulli``'s float32
uniform. Keys of other implementations (``impl="rbg"``...) and arrays of
``2**32`` elements or more take ``jax.random.bits`` itself: the same
probability, drawn by JAX's own lowering.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .._draw import is_threefry, one_key_shape

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # threefry's key-schedule constant


def _rotate_left(x: jax.Array, d: int) -> jax.Array:
    return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 (20 rounds) of the counter pair ``(x0, x1)`` under the key ``(k0, k1)``, unrolled.

    The hash of ``jax.extend.random.threefry2x32_p``, bit for bit, as plain
    ``uint32`` arithmetic that XLA can fuse with its consumer.
    """
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


# bits32 and keep_mask run as one jitted program each (shape and p static): called outside jit, as a dropout layer
# in eager mode calls them, the twenty unrolled rounds dispatched and compiled as some 200 programs of one operation
# each (measured: 0.94-1.01 s for the first mask of a shape, 4.4-7.4 ms for each later one; jitted, 0.16-0.24 s and
# 0.1-3.3 ms). Inside a caller's jit the call is inlined: the step compiles to the same program.


def bits32(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``jax.random.bits(key, shape, jnp.uint32)`` under ``jax_threefry_partitionable``, fusible for threefry keys."""
    return _bits32(key, tuple(shape))


@functools.partial(jax.jit, static_argnames="shape")
def _bits32(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    if not _inline(key, shape):
        return jax.random.bits(key, shape, jnp.uint32)
    k = jax.random.key_data(key)
    index = _flat_index(shape)
    a, b = threefry2x32(k[..., 0], k[..., 1], jnp.zeros(shape, jnp.uint32), index)
    return a ^ b


def _inline(key: jax.Array, shape: tuple[int, ...]) -> bool:
    """Whether :func:`bits32` hashes in line: one threefry key, a non-scalar shape of fewer than ``2**32`` elements."""
    return is_threefry(key) and jnp.shape(key) == one_key_shape(key) and bool(shape) and math.prod(shape) < 2**32


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
    """The row-major flat index of every element of ``shape``, as ``uint32``."""
    strides = np.cumprod((1,) + shape[:0:-1])[::-1]
    index = jnp.zeros(shape, jnp.uint32)
    for dim, stride in enumerate(strides):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, dim) * np.uint32(stride)
    return index


def keep_mask(key: jax.Array, p: float, shape: tuple[int, ...]) -> jax.Array:
    """A boolean keep mask of ``shape``: False (drop) with probability ``p`` rounded to a multiple of ``2**-32``.

    Args:
      key: a ``jax.random.key`` (or legacy ``uint32[2]`` key).
      p: the drop probability, ``0 <= p <= 1``.
      shape: the mask's shape.

    Returns:
      Every element kept for ``p == 0`` and none for ``p == 1`` (no bits drawn);
      otherwise ``bits32(key, shape) >= d`` with ``d = round(p * 2**32)``,
      clamped to ``[1, 2**32 - 1]``: each element is dropped with probability
      ``d / 2**32``.
    """
    return _keep_mask(key, float(p), tuple(shape))


@functools.partial(jax.jit, static_argnames=("p", "shape"))
def _keep_mask(key: jax.Array, p: float, shape: tuple[int, ...]) -> jax.Array:
    if p <= 0 or p >= 1:
        return jnp.full(shape, p <= 0)
    drop = np.uint32(min(max(round(p * 2**32), 1), 2**32 - 1))
    n = math.prod(shape)
    if not _inline(key, shape):
        return _bits32(key, shape) >= drop
    # Packed 32 to a word by a sum, which XLA does not fuse into the mask's users: the hash runs once, and the
    # forward and backward passes read bits. Bit k of word j is element k * m + j (bits32 of (32, m) is bits32
    # of the first 32 m flat indices; the words hash up to 31 elements past the end, dropped after unpacking).
    m = -(-n // 32)
    shifts = jnp.arange(32, dtype=jnp.uint32)[:, None]
    words = jnp.sum((_bits32(key, (32, m)) >= drop).astype(jnp.uint32) << shifts, axis=0, dtype=jnp.uint32)
    return ((words[None, :] >> shifts) & np.uint32(1)).astype(bool).reshape(-1)[:n].reshape(shape)
