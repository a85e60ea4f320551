"""jaxnets._draw: initial weights from one compiled program per law and dtype, with JAX's own values."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxnets import _draw

# Empty, scalar, within the small chunk, at and across both chunks' ends (1024 and 65536 elements), and
# over several large chunks; every reference draw is a program of its own.
SHAPES = [(), (4, 0), (3,), (3, 4, 5), (1024,), (1025,), (6, 16, 5, 5), (1 << 16,), (3, 70001)]


def _reference(law, key, shape, dtype, bound):
    """JAX's own draw, as jaxnets drew it before: flat, at the exact size, reshaped."""
    n = math.prod(shape)
    if law == "uniform":
        return jax.random.uniform(key, (n,), dtype, -bound, bound).reshape(shape)
    return jax.random.normal(key, (n,), dtype).reshape(shape)


def _ours(law, key, shape, dtype, bound):
    return _draw.uniform(key, shape, dtype, bound) if law == "uniform" else _draw.normal(key, shape, dtype)


def _assert_same(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.aval.weak_type == want.aval.weak_type and got.committed == want.committed
    np.testing.assert_array_equal(
        np.asarray(got).reshape(-1).view(np.uint8), np.asarray(want).reshape(-1).view(np.uint8)
    )


@pytest.mark.parametrize("law", ["uniform", "normal"])
@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey], ids=["typed-key", "raw-key"])
def test_values_are_jaxs_own_draw_bit_for_bit(law, make_key):
    for seed, shape in enumerate(SHAPES):
        key, bound = make_key(seed), 1.0 / math.sqrt(seed + 1)
        _assert_same(_ours(law, key, shape, jnp.float32, bound), _reference(law, key, shape, jnp.float32, bound))
    _assert_same(_ours(law, key, (5, 3), jnp.bfloat16, 0.5), _reference(law, key, (5, 3), jnp.bfloat16, 0.5))


def test_values_are_jaxs_own_in_float64(x64):
    key = jax.random.key(3)
    for shape in [(7,), (150, 16), (5, 5, 6)]:
        _assert_same(_draw.uniform(key, shape, jnp.float64, 0.1), _reference("uniform", key, shape, jnp.float64, 0.1))
        _assert_same(_draw.normal(key, shape, jnp.float64), _reference("normal", key, shape, jnp.float64, None))
        _assert_same(
            _draw.normal(key, shape, jnp.float64, 0.3), 0.3 * _reference("normal", key, shape, jnp.float64, None)
        )


def test_normal_equals_a_multidimensional_normal_draw():
    """``nn.init.normal`` drew ``jax.random.normal(key, shape)`` before: the same values under partitionable threefry."""
    key = jax.random.key(11)
    _assert_same(_draw.normal(key, (7, 3, 2), jnp.float32), jax.random.normal(key, (7, 3, 2), jnp.float32))


@pytest.mark.parametrize("std", [0.02, math.sqrt(2.0) / math.sqrt(64 * 9)])
def test_normal_with_a_std_equals_the_eager_product(std):
    key = jax.random.key(7)
    for shape, dtype in [((5,), jnp.float32), ((64, 3, 3, 3), jnp.float32), ((40,), jnp.bfloat16)]:
        _assert_same(_draw.normal(key, shape, dtype, std), std * _reference("normal", key, shape, dtype, None))


@pytest.mark.parametrize("std, mean", [(0.02, 1.0), (1.0, -0.5), (0.3, 0.0)])
def test_normal_with_a_mean_equals_the_eager_sum(std, mean):
    """``nn.init.normal(..., std, mean=...)`` is torch's ``normal_(w, mean, std)``: the eager ``mean + std * z``."""
    from jaxnets import nn

    key = jax.random.key(5)
    for shape, dtype in [((5,), jnp.float32), ((64, 3, 3, 3), jnp.float32), ((40,), jnp.bfloat16)]:
        scaled = _reference("normal", key, shape, dtype, None)
        scaled = scaled if std == 1.0 else std * scaled
        _assert_same(nn.init.normal(key, shape, dtype, std, mean=mean), scaled if mean == 0.0 else mean + scaled)
    traced = jax.jit(lambda k: nn.init.normal(k, (7,), jnp.float32, std, mean=mean))(key)  # JAX's own draw
    _assert_same(traced, jax.jit(lambda k: mean + std * jax.random.normal(k, (7,), jnp.float32))(key))


def test_normal_takes_a_traced_std_and_mean():
    """A std or mean computed inside ``jit`` (a fan-in formula on traced sizes, a learned scale) is JAX's own
    draw scaled and shifted; it once failed by asking whether the tracer equals 1.0 or 0.0."""
    from jaxnets import nn

    key = jax.random.key(9)
    got = jax.jit(lambda s, m: nn.init.normal(key, (3, 4), jnp.float32, s, mean=m))(0.5, 2.0)
    want = jax.jit(lambda s, m: m + s * jax.random.normal(key, (12,), jnp.float32))(0.5, 2.0).reshape(3, 4)
    _assert_same(got, want)
    got = jax.jit(lambda s: nn.init.normal(key, (5,), jnp.float32, s))(1.0)  # traced 1.0: multiplied, same values
    _assert_same(got, jax.jit(lambda s: s * jax.random.normal(key, (5,), jnp.float32))(1.0))


def test_one_program_per_chunk_size_serves_every_shape(backend_compiles):
    shapes = [(1025,), (600, 200), (25, 30), (3, 7, 41), (1,), (1 << 16,), ((1 << 16) + 1,)]
    keys = list(jax.random.split(jax.random.key(0), len(shapes)))
    _draw.uniform(keys[0], (1,), jnp.float32, 0.1)  # compile both chunks' programs, if no test has yet
    _draw.uniform(keys[0], (2000,), jnp.float32, 0.1)
    backend_compiles.clear()
    for key, shape in zip(keys, shapes, strict=True):
        _draw.uniform(key, shape, jnp.float32, 1.0 / shape[-1])
    assert backend_compiles == []


def test_a_model_built_eagerly_or_traced_has_the_same_weights():
    """Inside ``eval_shape``/``jit`` the key is a tracer: JAX's own draw, the same values."""
    from jaxnets import nn

    build = lambda: nn.Linear(37, 11, rngs=nnx.Rngs(5))
    eager = nnx.state(build())
    traced = nnx.state(nnx.jit(build)())
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(traced), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("case", ["partitionable-off", "rbg-key", "float64-without-x64"])
def test_jaxs_own_draw_where_chunks_would_not_compute_it(case):
    """Chunks are threefry's partitionable scheme; elsewhere JAX draws (and warns) as it always did."""
    key, dtype, partitionable = jax.random.key(2), jnp.float32, True
    if case == "partitionable-off":
        partitionable = False
    elif case == "rbg-key":
        key = jax.random.key(2, impl="rbg")
    else:
        dtype = jnp.float64
    with jax.threefry_partitionable(partitionable), jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # float64 requested without x64: JAX's own warning
        assert not _draw._chunkable(key, 0.1, 111, dtype)
        for law in ["uniform", "normal"]:
            _assert_same(_ours(law, key, (37, 3), dtype, 0.1), _reference(law, key, (37, 3), dtype, 0.1))


def test_a_key_committed_to_a_device_gives_weights_committed_there():
    key = jax.device_put(jax.random.key(4), jax.devices()[0])
    got, want = _draw.uniform(key, (9, 2), jnp.float32, 0.3), _reference("uniform", key, (9, 2), jnp.float32, 0.3)
    assert got.committed and got.sharding == want.sharding
    _assert_same(got, want)


def test_the_weights_own_their_buffer_and_can_be_donated():
    w = _draw.uniform(jax.random.key(0), (300,), jnp.float32, 0.1)
    before = np.array(w)
    out = jax.jit(lambda x: x * 2.0, donate_argnums=0)(w)
    np.testing.assert_array_equal(np.asarray(out), before * 2.0)


@pytest.mark.parametrize(
    "shape, value, dtype", [((5,), 1.0, jnp.float32), ((2, 3), 0.0, jnp.bfloat16), ((), 0, int), ((4,), 0.25, None)]
)
def test_constant_is_jnp_full_without_a_program_per_shape(shape, value, dtype, backend_compiles):
    from jaxnets.nn import init

    got = init.constant(shape, value, dtype or jnp.float32)
    assert backend_compiles == []
    want = jnp.full(shape, value, dtype or jnp.float32)
    assert got.dtype == want.dtype and got.aval.weak_type == want.aval.weak_type and got.committed == want.committed
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_constant_of_a_dtype_jax_does_not_hold_is_jaxs_own():
    from jaxnets.nn import init

    with jax.enable_x64(False), pytest.warns(UserWarning, match="float64"):
        assert init.constant((3,), 1.0, jnp.float64).dtype == jnp.float32
    with jax.enable_x64(True):
        assert (
            init.constant((), 0, int).dtype == jnp.int64 and init.constant((2,), 1.0, jnp.float64).dtype == jnp.float64
        )
