"""NaN kept by jaxnets' maxima where torch keeps it, at the sizes where XLA:CPU's reductions drop it.

In jaxlib 0.10.2 ``jnp.max`` of 840 rows of 8 float32 values (along the rows), of 4,096 values, or of 8
rows of 2,000 (along the columns) returned numbers where the values held NaN (jaxnets/_extrema.py). The
cases below are those sizes: a plain ``jnp.max`` in any of the functions tested fails them here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import _extrema, optim
from jaxnets.models import _fastconv
from jaxnets.nn import functional as F

# (shape, axis): each lost every NaN to jnp.max on this project's machine, eagerly and under jit.
LOST = [((840, 8), -1), ((4096,), None), ((8, 2000), 0)]


def _with_nans(shape, fraction=0.05, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float32)
    a[rng.random(shape) < fraction] = np.nan
    return a


@pytest.mark.parametrize("reduce, numpy", [(_extrema.amax, np.max), (_extrema.amin, np.min)], ids=["amax", "amin"])
@pytest.mark.parametrize("shape, axis", LOST, ids=[str(s) for s, _ in LOST])
def test_amax_and_amin_keep_nan_as_numpy_does(reduce, numpy, shape, axis):
    a = _with_nans(shape)
    want = numpy(a, axis=axis)
    for got in (reduce(jax.device_put(a), axis=axis), jax.jit(lambda a: reduce(a, axis=axis))(a)):
        np.testing.assert_array_equal(np.asarray(got), want)  # NaN where NumPy has NaN, the same numbers elsewhere
    b = np.nan_to_num(a)  # no NaN: jnp's own reduction, the same value
    np.testing.assert_array_equal(np.asarray(reduce(jax.device_put(b), axis=axis)), numpy(b, axis=axis))
    assert reduce(jnp.arange(6).reshape(2, 3), axis=1).tolist() == numpy(np.arange(6).reshape(2, 3), axis=1).tolist()


def _window_nans(x: np.ndarray, k: int) -> np.ndarray:
    """Per non-overlapping k x k window of (N, C, H, W): whether it holds a NaN."""
    n, c, h, w = x.shape
    return np.isnan(x[:, :, : h // k * k, : w // k * k].reshape(n, c, h // k, k, w // k, k)).any(axis=(3, 5))


def test_mirror_max_pool_of_a_large_input_is_nan_in_every_window_that_holds_one():
    x = _with_nans((8, 16, 32, 32), 0.01)  # 16 x 16 windows per map: 32,768 windows of 4
    nan = _window_nans(x, 2)
    for y in (F.max_pool2d(jax.device_put(x), 2), jax.jit(lambda x: F.max_pool2d(x, 2))(x)):
        np.testing.assert_array_equal(np.isnan(np.asarray(y)), nan)
    # The gradient goes to the window's last NaN (torch's pick), one element per window.
    g = np.asarray(jax.grad(lambda x: jnp.sum(F.max_pool2d(x, 2)))(jax.device_put(x)))
    windows = g.reshape(8, 16, 16, 2, 16, 2).transpose(0, 1, 2, 4, 3, 5).reshape(8, 16, 16, 16, 4)
    assert np.all(windows.sum(-1) == 1)
    flat = np.isnan(x).reshape(8, 16, 16, 2, 16, 2).transpose(0, 1, 2, 4, 3, 5).reshape(8, 16, 16, 16, 4)
    last_nan = 3 - np.argmax(flat[..., ::-1], axis=-1)
    np.testing.assert_array_equal(np.argmax(windows, -1)[nan], last_nan[nan])


def test_lenet_fast_pools_are_nan_in_every_window_that_holds_one():
    x = _with_nans((6, 28, 28, 64), 0.01)  # batch-last maps, LeNet's conv1 output at batch 64
    nan = np.isnan(x).reshape(6, 14, 2, 14, 2, 64).any(axis=(2, 4))
    np.testing.assert_array_equal(np.isnan(np.asarray(_fastconv.max_pool2d(jax.device_put(x)))), nan)
    images = _with_nans((1, 32, 32, 64), 0.002)  # conv1 with ReLU and the pool: NaN windows of the conv's output
    kernel = jnp.full((5, 5, 1, 6), 0.04, jnp.float32)
    z = np.asarray(_fastconv.conv2d(jax.device_put(images), kernel))
    got = np.asarray(_fastconv.conv2d_relu_max_pool2d(jax.device_put(images), kernel))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(z).reshape(6, 14, 2, 14, 2, 64).any(axis=(2, 4)))


def test_infinity_norms_are_nan_when_a_large_gradient_holds_one():
    grads = {"w": jax.device_put(_with_nans((4096,), 0.001)), "b": jnp.ones(3)}
    assert np.isnan(optim.get_total_norm(grads, float("inf")))
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.get_total_norm(grads, float("inf"), error_if_nonfinite=True)
    rows = _with_nans((840, 8))
    np.testing.assert_array_equal(
        np.asarray(F.vector_norm(jax.device_put(rows), float("inf"))), np.max(np.abs(rows), axis=-1)
    )
