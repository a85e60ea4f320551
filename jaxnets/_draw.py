"""Initial weights drawn by one compiled program per law and dtype, whatever the parameters' shapes.

A model built eagerly draws each parameter with ``jax.random.uniform`` or ``jax.random.normal``, and JAX
compiles a program for every new shape: about 80 ms each at XLA's defaults here. Building the ported
torchvision ResNet-18 (:func:`jaxnets.ports.resnet18`) in a fresh process took 11.5 to 12.3 s with 58
compilations, 43 of them draws (1.84 to 1.87 s and 25 with this module); the test suite compiled 216 of them.

With JAX's default PRNG (threefry) and ``jax_threefry_partitionable`` on (JAX's default since 0.5), element
``j`` of a flat draw is a function of the key and ``j`` alone: threefry-2x32 of the counter pair
``(j >> 32, j & 0xFFFFFFFF)``, the two output words XORed, then mapped to a float by the law. So a draw of
``n`` elements is computed here in chunks of ``CHUNKS`` elements, by a program that takes the chunk's first
index as a value: the same threefry primitive (``jax.extend.random.threefry2x32_p``) and the same float
arithmetic as ``jax.random.uniform`` and ``jax.random.normal`` (``jax._src.random.core._uniform`` and
``_normal_real`` in JAX 0.10.2), bit for bit, for any ``n``. Small draws take a small chunk, so that a bias
does not pay for a large one.

JAX's own draw is used, unchanged, wherever that reasoning does not hold: under tracing (a model built
inside ``jit`` or ``nnx.eval_shape``, where the draw is part of a larger program anyway), for keys of another
PRNG, with partitionable threefry off, for keys not on a single device, and for dtypes of fewer than 16 bits.
tests/test_draw.py checks the values against JAX's own draw, across chunk boundaries.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import threefry2x32_p

CHUNKS = (1 << 10, 1 << 16)  # elements per call: the small one for draws that fit in it, else the large one
_UINT = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


def uniform(key: jax.Array, shape, dtype, bound) -> jax.Array:
    """The values of ``jax.random.uniform(key, (prod(shape),), dtype, -bound, bound)``, reshaped to ``shape``."""
    return _flat("uniform", key, tuple(shape), dtype, bound)


def normal(key: jax.Array, shape, dtype, std: float = 1.0, mean: float = 0.0) -> jax.Array:
    """The values of ``mean + std * jax.random.normal(key, (prod(shape),), dtype)``, reshaped to ``shape``.

    Under partitionable threefry the same as ``jax.random.normal(key, shape, dtype)``: the index is flat.
    ``std`` multiplies on the host, one IEEE product per element as the eager product (a program per shape of
    its own) computes it; inside the draw's program, XLA rounded one element in 20 differently. ``mean`` is
    added after it in the same way (``mean`` rounded to the dtype, then one IEEE sum per element).
    """
    return _flat("normal", key, tuple(shape), dtype, std, mean)


def _flat(law: str, key: jax.Array, shape: tuple, dtype, scale, mean=0.0) -> jax.Array:
    """``law``'s flat draw of ``prod(shape)`` elements, reshaped; ``scale``: the uniform's bound, the normal's std;
    ``mean``: the normal's mean."""
    n = math.prod(shape)
    if not _chunkable(key, scale, n, dtype) or isinstance(mean, jax.core.Tracer):
        if law == "uniform":
            return jax.random.uniform(key, (n,), dtype, -scale, scale).reshape(shape)
        flat = jax.random.normal(key, (n,), dtype)
        flat = flat if _is(scale, 1.0) else scale * flat
        return (flat if _is(mean, 0.0) else mean + flat).reshape(shape)
    size = CHUNKS[0] if n <= CHUNKS[0] else CHUNKS[1]
    dtype = jnp.dtype(dtype)
    bound = scale if law == "uniform" else 0.0
    parts = [_chunk(key, np.uint32(start), bound, size=size, dtype=dtype, law=law) for start in range(0, n, size)]
    # Fresh NumPy memory (the parameter owns its buffer, so it can be donated), put where JAX's draw would
    # be: committed to the key's device only if the key is.
    values = np.concatenate([np.asarray(p) for p in parts] or [np.zeros(0, dtype)])[:n].reshape(shape)
    if law == "normal" and scale != 1.0:
        values = np.asarray(scale, dtype) * values  # `scale` rounded to the dtype first, as JAX's weak scalar is
    if law == "normal" and mean != 0.0:
        values = np.asarray(mean, dtype) + values
    device = next(iter(key.sharding.device_set))
    return jax.device_put(values, device) if key.committed else jax.device_put(values)


def _is(value, constant: float) -> bool:
    """Whether ``value`` is known to equal ``constant`` now: never for a traced value, which may hold anything."""
    return not isinstance(value, jax.core.Tracer) and value == constant


def _chunkable(key, scale, n: int, dtype) -> bool:
    """Whether :func:`_chunk` computes JAX's own draw of ``n`` elements under ``key``."""
    if isinstance(key, jax.core.Tracer) or isinstance(scale, jax.core.Tracer) or not isinstance(key, jax.Array):
        return False
    if jnp.dtype(dtype) != jax.dtypes.canonicalize_dtype(dtype):  # float64 without x64: JAX's own draw and warning
        return False
    if not jnp.issubdtype(dtype, jnp.floating) or jnp.finfo(dtype).bits not in (16, 32, 64) or n >= 1 << 32:
        return False
    if not jax.config.jax_threefry_partitionable or not is_threefry(key):
        return False
    return jnp.shape(key) == one_key_shape(key) and len(key.sharding.device_set) == 1


def is_threefry(key: jax.Array) -> bool:
    """Whether ``key`` is a threefry key (typed, or a legacy ``uint32`` one under the default threefry)."""
    return str(jax.random.key_impl(key)) == "threefry2x32"


def one_key_shape(key) -> tuple:
    """The shape of one key: ``()`` for a typed key, ``(2,)`` for a legacy ``uint32`` one."""
    return () if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else (2,)


@functools.partial(jax.jit, static_argnames=("size", "dtype", "law"))
def _chunk(key, start, bound, *, size: int, dtype, law: str) -> jax.Array:
    """Elements ``start`` to ``start + size - 1`` of the flat draw of ``law`` under ``key``, as JAX computes them."""
    if law == "uniform":
        return _uniform(key, start, size, dtype, -bound, bound)
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    u = _uniform(key, start, size, dtype, lo, np.array(1.0, dtype))
    return lax.mul(np.array(np.sqrt(2), dtype), lax.erf_inv(u))


def _uniform(key, start, size: int, dtype, minval, maxval) -> jax.Array:
    """``jax._src.random.core._uniform`` (JAX 0.10.2) on the bits of flat indices ``start + arange(size)``."""
    minval = lax.convert_element_type(minval, dtype)
    maxval = lax.convert_element_type(maxval, dtype)
    finfo = jnp.finfo(dtype)
    nbits, nmant = finfo.bits, finfo.nmant
    rng_bits = nbits if nmant >= 8 else 8
    bits = _bits(key, start, size, rng_bits)
    if rng_bits != nbits:
        bits = lax.convert_element_type(bits, _UINT[nbits])
    float_bits = lax.shift_right_logical(bits, jnp.array(rng_bits - nmant, _UINT[nbits]))
    float_bits = lax.bitwise_or(float_bits, jnp.asarray(np.array(1.0, dtype).view(_UINT[nbits]), dtype=_UINT[nbits]))
    floats = lax.bitcast_convert_type(float_bits, dtype) - jnp.array(1.0, dtype)
    return lax.max(minval, floats * (maxval - minval) + minval)


def _bits(key, start, size: int, bit_width: int) -> jax.Array:
    """``jax.random.bits``' words of ``bit_width`` for flat indices ``start + arange(size)`` (partitionable)."""
    k = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    lo = start + lax.iota(jnp.uint32, size)  # indices below 2**32 (checked by _chunkable): the high word is 0
    bits1, bits2 = threefry2x32_p.bind(k[0], k[1], jnp.zeros(size, jnp.uint32), lo)
    if bit_width == 64:
        hi, lo = (lax.convert_element_type(b, jnp.uint64) for b in (bits1, bits2))
        return (hi << jnp.uint64(32)) | lo
    word = bits1 ^ bits2
    return word if bit_width == 32 else lax.convert_element_type(word, _UINT[bit_width])
