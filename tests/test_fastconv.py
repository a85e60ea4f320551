"""LeNet(impl="fast") and its layers against the lax reference and torch: values, gradients, ties, shapes, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from tolerances import F32_RTOL, F64_RTOL

import jaxnets
from jaxnets.losses import cross_entropy
from jaxnets.models import _fastconv

torch.set_num_threads(1)  # torch and XLA share two cores in this process


def rel_err(a, b) -> float:
    """The largest norm-wise relative error max|a - b| / max|b| of any one leaf of two pytrees.

    Per leaf, so that an error in a small array (a bias gradient) is not hidden by a large one.
    A leaf that is all zeros in ``b`` must be all zeros in ``a`` (error 0), or the error is inf.
    """
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(a) == len(b)
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape, (x.shape, y.shape)
        num, den = float(np.max(np.abs(x - y), initial=0.0)), float(np.max(np.abs(y), initial=0.0))
        worst = max(worst, num / den if den > 0 else (0.0 if num == 0 else np.inf))
    return worst


def images(kind: str, shape, dtype) -> jax.Array:
    """Random images, or images full of ties: integers, a constant block of halves and a zero band.

    The tie images are meant for models whose weights are dyadic (:func:`dyadic`): then every
    convolution output is exact in float32 and float64 whatever order a convolution algorithm
    adds in, so a window that ties on one CPU ties on every CPU, in both implementations.
    """
    x = np.random.default_rng(0).standard_normal(shape)
    if kind == "ties":
        x = np.round(x)  # most 2x2 windows of conv outputs on flat regions tie
        x[..., 4:20, 6:22, :] = 0.5  # a constant block: every window inside it is a tie
        x[..., 24:, :, :] = 0.0
    # Cast by NumPy (round to nearest, as XLA's convert) and put on the device as it is: jnp.asarray compiled a
    # conversion program per shape.
    return jax.device_put(np.asarray(x, dtype))


def dyadic(model):
    """Round every parameter of ``model`` to a multiple of 1/64, in place, and return the model.

    With integer-and-half inputs (:func:`images`), LeNet's conv1 outputs are multiples of 1/128
    below 2**5 and conv2's multiples of 1/8192 below 2**9: 22 significant bits at most, so every
    partial sum is exact even in float32. Ties in the convolution outputs, which the max-pools
    then break by position, are therefore ties in every implementation and on every CPU (with
    LeNet's random weights, a constant region's outputs differ in the last bit from pixel to
    pixel, and how depends on the summation order of the CPU's convolution kernels).
    """
    nnx.update(model, _round_to_64ths(nnx.state(model, nnx.Param)))
    return model


@jax.jit
def _round_to_64ths(params):
    # One program per parameter structure: eagerly, the product, the rounding and the quotient compiled for
    # every parameter shape.
    return jax.tree.map(lambda p: jnp.round(p * 64) / 64, params)


def fast_and_lax(dtype=jnp.float32, **kwargs):
    """LeNet's fast and lax implementations with the same dyadic weights (see :func:`dyadic`)."""
    make = lambda impl: dyadic(jaxnets.LeNet(**kwargs, param_dtype=dtype, impl=impl, rngs=nnx.Rngs(0)))
    return make("fast"), make("lax")


def value_and_grads(model, x):
    """The logits and the gradients of a loss that weighs every logit differently, for params and input."""
    graphdef, params = nnx.split(model, nnx.Param)
    grads, logits = _grads_and_logits(graphdef, params, x)
    return logits, grads


# One compiled program per model structure (the graphdef, static and hashable) and shape, shared by the tests that
# repeat them (random and tied images): op-by-op, every small op compiled on its own, and a jitted closure per call
# compiled again for every test.
@functools.partial(jax.jit, static_argnums=0)
def _grads_and_logits(graphdef, params, x):
    def loss(params, x):
        logits = nnx.merge(graphdef, params)(x)
        weights = jnp.linspace(-1.0, 2.0, logits.shape[-1], dtype=x.dtype)
        return jnp.sum(jnp.tanh(logits) * weights), logits

    return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, x)


CONFIGS = [(5, 32, 1), (3, 32, 1), (5, 28, 3), (3, 28, 3)]
CONFIG_IDS = ["5x5-32px-gray", "3x3-32px-gray", "5x5-28px-rgb", "3x3-28px-rgb"]


# -- LeNet: fast against lax ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("kernel_size,image_size,in_channels", CONFIGS, ids=CONFIG_IDS)
def test_lenet_fast_matches_lax_values_and_gradients_in_float64(x64, kernel_size, image_size, in_channels, kind):
    fast, lax_ = fast_and_lax(jnp.float64, kernel_size=kernel_size, image_size=image_size, in_channels=in_channels)
    x = images(kind, (3, image_size, image_size, in_channels), jnp.float64)
    got, want = value_and_grads(fast, x), value_and_grads(lax_, x)
    assert rel_err(got[0], want[0]) <= F64_RTOL
    assert rel_err(got[1][0], want[1][0]) <= F64_RTOL  # parameters
    assert rel_err(got[1][1], want[1][1]) <= F64_RTOL  # input
    assert float(np.max(np.abs(got[1][0]["conv1"]["kernel"][...]))) > 0  # a gradient reached conv1
    if kind == "ties":
        assert nonzero_ties(lax_, x) > 20  # the max-pools do see tied windows of nonzero values


def nonzero_ties(model, x) -> int:
    """How many of conv1's 2x2 pooling windows (after ReLU) hold a nonzero maximum more than once."""
    a = np.asarray(jax.nn.relu(model.conv1(x.reshape((-1,) + x.shape[-3:]))))  # (N, H, W, C)
    n, h, w, c = a.shape
    windows = a[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(n, h // 2, w // 2, c, 4)
    top = windows.max(-1, keepdims=True)
    return int(np.sum((np.sum(windows == top, -1) > 1) & (top[..., 0] > 0)))


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_lenet_fast_matches_lax_in_float32(kind):
    fast, lax_ = fast_and_lax(jnp.float32)
    x = images(kind, (8, 32, 32, 1), jnp.float32)
    got, want = value_and_grads(fast, x), value_and_grads(lax_, x)
    assert rel_err(got[0], want[0]) <= F32_RTOL
    assert rel_err(got[1], want[1]) <= F32_RTOL
    if kind == "ties":
        assert nonzero_ties(lax_, x) > 20


@pytest.mark.parametrize(
    "shape",
    [(32, 32, 1), (1, 32, 32, 1), (17, 32, 32, 1), (32, 32, 32, 1), (130, 32, 32, 1)],
    ids=["single-image", "batch-1", "unequal-halves", "halves", "3-chunks-padded"],
)
def test_lenet_fast_matches_lax_for_single_images_and_chunked_batches(x64, shape):
    fast, lax_ = fast_and_lax(jnp.float64)
    x = images("ties", shape, jnp.float64)
    got, want = value_and_grads(fast, x), value_and_grads(lax_, x)
    assert got[0].shape == want[0].shape == shape[:-3] + (10,)
    assert rel_err(got[0], want[0]) <= F64_RTOL
    assert rel_err(got[1], want[1]) <= F64_RTOL
    assert nonzero_ties(lax_, x) > 5


def test_lenet_impls_share_parameters_and_checkpoints():
    fast, lax_ = (jaxnets.LeNet(impl=impl, rngs=nnx.Rngs(0)) for impl in ("fast", "lax"))  # as initialised
    fast_params, lax_params = nnx.state(fast, nnx.Param), nnx.state(lax_, nnx.Param)
    assert jax.tree.structure(nnx.to_pure_dict(fast_params)) == jax.tree.structure(nnx.to_pure_dict(lax_params))
    for a, b in zip(jax.tree.leaves(fast_params), jax.tree.leaves(lax_params), strict=True):
        np.testing.assert_array_equal(a, b)  # same names, shapes, init and values
    assert isinstance(fast.conv1, nnx.Conv) and isinstance(fast.conv1, _fastconv.FastConv)
    nnx.update(lax_, jax.tree.map(lambda a: a + 1, fast_params))  # a fast checkpoint loads into lax
    x = images("random", (2, 32, 32, 1), jnp.float32)
    nnx.update(fast, nnx.state(lax_, nnx.Param))
    assert rel_err(fast(x), lax_(x)) <= F32_RTOL


def test_lenet_rejects_an_unknown_impl():
    with pytest.raises(ValueError, match=r"`impl` must be one of 'fast', 'lax'; got 'cudnn'"):
        jaxnets.LeNet(impl="cudnn", rngs=nnx.Rngs(0))


def test_lenet_fast_trainer_steps_without_recompiling():
    model = jaxnets.LeNet(rngs=nnx.Rngs(0))
    trainer = jaxnets.Trainer(model, jaxnets.optim.sgd(lr=0.01), lambda m, x, y: cross_entropy(m(x), y))
    x = images("random", (70, 32, 32, 1), jnp.float32)  # two chunks
    y = jnp.arange(70) % 10
    losses = [float(trainer.step(x, y)) for _ in range(4)]
    assert trainer.compilations == 1
    assert losses[-1] < losses[0]


# -- the layers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [2, 4], ids=["6-images", "12-images"])  # below and above SHIFT_MIN_BATCH
@pytest.mark.parametrize(
    "in_channels,kernel_size", [(1, 5), (3, 3), (6, 5)], ids=["few-taps-1ch", "few-taps-3ch", "many-taps"]
)
def test_fast_conv_matches_nnx_conv_with_the_same_parameters(x64, in_channels, kernel_size, rows):
    # nnx.Conv reads an int kernel_size as a 1-D kernel: give it (k, k).
    make = lambda cls: cls(
        in_channels, 4, (kernel_size, kernel_size), **({} if cls is _fastconv.FastConv else {"padding": "VALID"}),
        param_dtype=jnp.float64, rngs=nnx.Rngs(1),
    )  # fmt: skip
    fast, ref = make(_fastconv.FastConv), make(nnx.Conv)
    np.testing.assert_array_equal(fast.kernel[...], ref.kernel[...])
    np.testing.assert_array_equal(fast.bias[...], ref.bias[...])
    x = images("ties", (rows, 3, 14, 14, in_channels), jnp.float64)  # two leading batch axes

    # One compiled program per layer: batched and single-image outputs and the gradients (eagerly, every
    # primitive compiled on its own: 196 compilations for these 6 cases).
    @functools.partial(jax.jit, static_argnums=2)  # the graphdef (hashable) picks the layer
    def outputs_and_grads(params, x, graphdef):
        call = lambda p, x: nnx.merge(graphdef, p)(x)
        loss = lambda p, x: jnp.sum(jnp.sin(call(p, x)))
        return call(params, x), call(params, x[0, 0]), jax.grad(loss, argnums=(0, 1))(params, x)

    (fast_out, fast_single, fast_grads), (ref_out, ref_single, ref_grads) = (
        outputs_and_grads(params, x, graphdef)
        for graphdef, params in (nnx.split(fast, nnx.Param), nnx.split(ref, nnx.Param))
    )
    assert fast_out.shape == ref_out.shape == (rows, 3, 15 - kernel_size, 15 - kernel_size, 4)
    assert rel_err(fast_out, ref_out) <= F64_RTOL
    assert rel_err(fast_single, ref_single) <= F64_RTOL  # a single image
    assert rel_err(fast_grads, ref_grads) <= F64_RTOL


@pytest.mark.parametrize("batch,shifts", [(1, False), (7, False), (8, True), (64, True)])
def test_conv2d_takes_shifted_sums_only_for_few_taps_and_enough_images(batch, shifts):
    # Shifted sums vectorise over the images; below SHIFT_MIN_BATCH the forward is a matrix product.
    assert _fastconv.SHIFT_MIN_BATCH == 8
    x = jnp.ones((1, 12, 12, batch))
    products = lambda kernel: str(jax.make_jaxpr(_fastconv.conv2d)(x, kernel)).count("dot_general")
    assert products(jnp.ones((5, 5, 1, 6))) == (0 if shifts else 1)  # 25 taps
    assert products(jnp.ones((1, 1, 1, 6))) == (0 if shifts else 1)  # 1 tap
    assert products(jnp.ones((7, 4, 1, 6))) == 1  # 28 taps: always a matrix product


def test_max_pool2d_sends_a_tied_gradient_to_the_first_maximum_in_row_major_order(x64):
    windows = np.array(
        [
            [[1, 1], [0, 0]],  # (0, 0) and (0, 1) tie -> (0, 0)
            [[0, 1], [1, 0]],  # (0, 1) and (1, 0) tie -> (0, 1)
            [[0, 0], [1, 1]],  # (1, 0) and (1, 1) tie -> (1, 0)
            [[2, 2], [2, 2]],  # all tie -> (0, 0)
            [[0, 0], [0, 3]],  # no tie -> (1, 1)
        ],
        np.float64,
    )
    x = jax.device_put(windows.reshape(1, 5, 2, 2).transpose(0, 2, 1, 3).reshape(1, 2, 10, 1))  # (C, H, W, N)
    g = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0]).reshape(1, 1, 5, 1)
    y, vjp = jax.vjp(_fastconv.max_pool2d, x)
    np.testing.assert_array_equal(y[0, 0, :, 0], [1, 1, 1, 2, 3])
    dx = np.asarray(vjp(g)[0])[0, :, :, 0].reshape(2, 5, 2).transpose(1, 0, 2)  # back to one 2x2 window per row
    expected = np.zeros((5, 2, 2))
    for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (0, 0), (1, 1)]):
        expected[k, i, j] = k + 1
    np.testing.assert_array_equal(dx, expected)


def test_max_pool2d_gives_a_nan_windows_gradient_to_its_last_nan_as_torch_and_the_mirror_do(x64):
    # Ties and NaNs, odd sizes: the fast pool, the torch-mirror pool and torch pick the same element
    # (the rule is one function, jaxnets.nn.functional.max_pool_pick). The old fast pool gave a NaN window
    # no gradient at all.
    x = np.random.default_rng(0).integers(0, 3, (3, 7, 9, 5)).astype(np.float64)  # (C, H, W, N)
    for c, i, j, n in [(0, 0, 0, 0), (0, 1, 1, 0), (1, 2, 3, 1), (2, 4, 4, 4), (2, 5, 5, 4), (1, 6, 8, 2)]:
        x[c, i, j, n] = np.nan  # two NaNs in one window twice; the last one in the dropped odd row
    g = np.random.default_rng(1).standard_normal((3, 3, 4, 5))
    y, vjp = jax.vjp(_fastconv.max_pool2d, jax.device_put(x))
    dx = np.asarray(vjp(jax.device_put(g))[0])
    to_nchw = lambda a: np.asarray(a).transpose(3, 0, 1, 2)  # noqa: E731 - (C, H, W, N) -> (N, C, H, W)
    ym, vjpm = jax.vjp(lambda a: jaxnets.nn.functional.max_pool2d(a, 2), jax.device_put(to_nchw(x)))
    xt = torch.tensor(to_nchw(x), requires_grad=True)
    yt = F.max_pool2d(xt, 2)
    yt.backward(torch.tensor(to_nchw(g)))
    for want_y, want_dx in [(np.asarray(ym), np.asarray(vjpm(jax.device_put(to_nchw(g)))[0])), (yt.detach(), xt.grad)]:
        np.testing.assert_array_equal(to_nchw(y), np.asarray(want_y))
        np.testing.assert_array_equal(to_nchw(dx), np.asarray(want_dx))
    assert dx[0, 1, 1, 0] == g[0, 0, 0, 0] and dx[0, 0, 0, 0] == 0  # the test has teeth: the last NaN of two


def test_max_pool2d_floors_odd_sizes_and_passes_no_gradient_to_the_dropped_edge():
    x = images("random", (2, 5, 7, 3), jnp.float32)
    y, vjp = jax.vjp(_fastconv.max_pool2d, x)
    assert y.shape == (2, 2, 3, 3)
    dx = vjp(jnp.ones_like(y))[0]
    assert dx.shape == x.shape
    assert not np.any(dx[:, 4]) and not np.any(dx[:, :, 6])
    assert float(dx.sum()) == y.size  # one maximum per window


def test_conv2d_and_max_pool2d_reject_wrong_ranks_and_channels():
    with pytest.raises(ValueError, match=r"conv2d expects batch-last maps .* got \(3, 8, 8, 2\) and \(5, 5, 1, 6\)"):
        _fastconv.conv2d(jnp.zeros((3, 8, 8, 2)), jnp.zeros((5, 5, 1, 6)))
    with pytest.raises(ValueError, match=r"max_pool2d expects batch-last maps \(C, H, W, N\); got shape \(8, 8\)"):
        _fastconv.max_pool2d(jnp.zeros((8, 8)))


# -- against torch -------------------------------------------------------------------------------


def fused_path(x, kernel) -> bool:
    """Whether conv2d_relu_max_pool2d takes its own backward pass (not the three ops') for these shapes."""
    return "name=_conv_relu_pool" in str(jax.make_jaxpr(_fastconv.conv2d_relu_max_pool2d)(x, kernel))


@pytest.mark.parametrize("batch,fused", [(4, False), (12, False), (12, True)], ids=["4-ops", "12-ops", "12-fused"])
def test_fast_conv_relu_pool_gradients_equal_torchs_in_float64_with_ties(x64, batch, fused):
    # torch's F.conv2d -> F.relu -> F.max_pool2d, both convolutions of LeNet, on tied inputs; the
    # three ops composed, or conv2d_relu_max_pool2d (its own backward pass for conv1 from 8 images on).
    rng = np.random.default_rng(3)
    x = np.asarray(images("ties", (batch, 32, 32, 1), jnp.float64))  # (N, H, W, C)
    # Weights on a grid of 1/64 and inputs of integers and halves: every sum in both
    # convolutions is exact in float64, whatever order a framework adds in, so a window
    # that ties in one framework ties in the other. (With rounded sums, a constant
    # region's outputs differ in the last bit from pixel to pixel, differently in each
    # framework, and each then picks a different "first" maximum.)
    dyadic = lambda a: np.round(a * 64) / 64
    w1, w2 = dyadic(rng.standard_normal((5, 5, 1, 6)) / 5), dyadic(rng.standard_normal((5, 5, 6, 16)) / 12)  # HWIO
    b1, b2 = dyadic(rng.standard_normal(6) / 5), dyadic(rng.standard_normal(16) / 12)
    b1[0] = -10.0  # channel 0 is all ReLU zeros: every pooling window ties
    r = rng.standard_normal((batch, 16, 5, 5))  # cotangent, (N, C, H, W)

    tx, tw1, tw2, tb1, tb2 = (
        torch.tensor(a, requires_grad=True)
        for a in (x.transpose(0, 3, 1, 2), w1.transpose(3, 2, 0, 1), w2.transpose(3, 2, 0, 1), b1, b2)
    )  # NHWC -> NCHW, HWIO -> OIHW
    t = F.max_pool2d(F.relu(F.conv2d(tx, tw1, tb1)), 2)
    t = F.max_pool2d(F.relu(F.conv2d(t, tw2, tb2)), 2)
    (t * torch.tensor(r)).sum().backward()

    def stage(h, w, b):
        if fused:
            return _fastconv.conv2d_relu_max_pool2d(h, w, b)
        return _fastconv.max_pool2d(jax.nn.relu(_fastconv.conv2d(h, w, b)))

    def jax_loss(x, w1, b1, w2, b2):
        h = _fastconv.to_batch_last(x)  # (N, H, W, C) -> (C, H, W, N)
        h = stage(stage(h, w1, b1), w2, b2)
        return jnp.sum(h * jax.device_put(r.transpose(1, 2, 3, 0)))  # (N, C, H, W) -> (C, H, W, N)

    assert fused_path(_fastconv.to_batch_last(jax.device_put(x)), jax.device_put(w1)) == (batch >= 8)  # conv1's path

    grads = jax.grad(jax_loss, argnums=(0, 1, 2, 3, 4))(*map(jax.device_put, (x, w1, b1, w2, b2)))
    assert rel_err(grads[0], tx.grad.numpy().transpose(0, 2, 3, 1)) <= F64_RTOL
    assert rel_err(grads[1], tw1.grad.numpy().transpose(2, 3, 1, 0)) <= F64_RTOL
    assert rel_err(grads[2], tb1.grad.numpy()) <= F64_RTOL
    assert rel_err(grads[3], tw2.grad.numpy().transpose(2, 3, 1, 0)) <= F64_RTOL
    assert rel_err(grads[4], tb2.grad.numpy()) <= F64_RTOL
    assert float(tb1.grad[0]) == 0.0 and float(grads[2][0]) == 0.0  # the tied channel passes nothing
    # The inputs do produce exact ties of nonzero values (the constant block), not only zeros.
    a1 = F.relu(F.conv2d(tx, tw1, tb1)).detach().numpy()[:, 1:]  # (N, 5, 28, 28)
    windows = a1.reshape(batch, 5, 14, 2, 14, 2).transpose(0, 1, 2, 4, 3, 5).reshape(batch, 5, 14, 14, 4)
    nonzero_ties = (np.sum(windows == windows.max(-1, keepdims=True), -1) > 1) & (windows.max(-1) > 0)
    assert nonzero_ties.sum() > 100


@pytest.mark.parametrize(
    "c,h,w,kh,kw",
    [(1, 32, 32, 5, 5), (1, 13, 15, 5, 5), (3, 12, 11, 3, 3), (2, 11, 12, 4, 3), (1, 9, 9, 1, 1)],
    ids=["lenet-conv1", "odd-sizes", "3ch-27taps", "even-kernel", "1x1"],
)
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_conv2d_relu_max_pool2d_fused_equals_the_three_ops_in_float64(x64, c, h, w, kh, kw, kind):
    rng = np.random.default_rng(c * 100 + h + kh)
    x = jax.device_put(np.asarray(images(kind, (c, h + 20, w + 20, 9), jnp.float64))[:, :h, :w])  # (C, H, W, N)
    kernel = jax.device_put(np.round(rng.standard_normal((kh, kw, c, 4)) * 8) / 32)
    bias = jnp.asarray([-100.0, 0.0, 0.25, -0.25])  # channel 0: all ReLU zeros, every window a tie
    assert fused_path(x, kernel)
    cot = jax.device_put(rng.standard_normal((4, (h - kh + 1) // 2, (w - kw + 1) // 2, 9)))
    fused = lambda x, k, b: jnp.sum(_fastconv.conv2d_relu_max_pool2d(x, k, b) * cot)
    ops = lambda x, k, b: jnp.sum(_fastconv.max_pool2d(jax.nn.relu(_fastconv.conv2d(x, k, b))) * cot)
    got, want = (jax.value_and_grad(f, argnums=(0, 1, 2))(x, kernel, bias) for f in (fused, ops))
    assert rel_err(got, want) <= F64_RTOL
    assert float(got[1][2][0]) == 0.0 and float(jnp.max(jnp.abs(got[1][1]))) > 0


@pytest.mark.parametrize("batch", [8, 2], ids=["fused", "composed"])  # conv1's shifted sums from SHIFT_MIN_BATCH
def test_conv2d_relu_max_pool2d_passes_no_gradient_through_a_nan_window_and_checks_shapes(batch):
    # Both paths pick without the NaN rule (max_pool_pick(nans=False)): relu's zero gradient at NaN is the reason.
    assert (batch >= _fastconv.SHIFT_MIN_BATCH) == (batch == 8)
    x = jnp.ones((1, 12, 12, batch)).at[0, 0, 0, 1].set(jnp.nan).at[0, 0, 1, 1].set(jnp.nan)  # two in one window
    kernel = jnp.full((1, 1, 1, 2), 0.5)
    out, vjp = jax.vjp(_fastconv.conv2d_relu_max_pool2d, x, kernel)
    assert bool(jnp.isnan(out[:, 0, 0, 1]).all()) and not bool(jnp.isnan(out[:, 1:]).any())
    dx, dk = vjp(jnp.ones_like(out))
    assert not dx[0, :2, :2, 1].any() and bool(jnp.isfinite(dx).all())
    assert dx[0, :2, :2, 0].sum() == 1.0  # the test has teeth: a window without NaN passes its gradient on
    # The kernel gradient multiplies the NaN by a zero cotangent: NaN, as for the three ops (and torch).
    ops = lambda x, k: _fastconv.max_pool2d(jax.nn.relu(_fastconv.conv2d(x, k)))
    np.testing.assert_array_equal(dk, jax.vjp(ops, x, kernel)[1](jnp.ones_like(out))[1])
    with pytest.raises(ValueError, match=rf"with the same C; got \(1, 12, 12, {batch}\) and \(1, 1, 2, 2\)"):
        _fastconv.conv2d_relu_max_pool2d(x, jnp.ones((1, 1, 2, 2)))
