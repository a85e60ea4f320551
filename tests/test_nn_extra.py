"""jaxnets.nn's dropout variants, interpolation, one_hot and scaled_dot_product_attention against torch.

torch's dropout masks come from its global generator, which JAX cannot
reproduce. So the float64 comparison hands both sides the same mask: torch's
mask is read back from torch's output (a kept element is never exactly the
dropped value for continuous random inputs) and passed to jaxnets through
``mask=``. The random path is tested for what it must be: whole channels
dropped for the channel variants, the drop rate near ``p``, and kept values
scaled exactly as the mask formula says.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from flax import nnx
from jax.extend.random import threefry2x32_p
from tolerances import F64_ATOL, F64_RTOL

from jaxnets import nn
from jaxnets.nn import _random
from jaxnets.nn import functional as F


def _close(have, want, what=""):
    np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=F64_RTOL, atol=F64_ATOL, err_msg=what)


def _normal(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


# Dropout variants ----------------------------------------------------------

ALPHA = 1.7580993408473766


def _alpha_dropped(p):
    """The value torch gives a dropped element of alpha dropout: x * 0 + b with ATen's b for noise 0."""
    a = 1.0 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
    return (0.0 - 1) * (ALPHA * a) + ALPHA * a * p


# (name, torch function, input shape, feature-wise, alpha)
DROPOUTS = [
    ("dropout1d", TF.dropout1d, (3, 5, 7), True, False),
    ("dropout1d", TF.dropout1d, (5, 7), True, False),  # unbatched (C, L)
    ("dropout2d", TF.dropout2d, (3, 5, 4, 6), True, False),
    ("dropout3d", TF.dropout3d, (2, 5, 3, 4, 2), True, False),
    ("dropout3d", TF.dropout3d, (5, 3, 4, 2), True, False),  # unbatched (C, D, H, W)
    ("alpha_dropout", TF.alpha_dropout, (4, 6, 5), False, True),
    ("feature_alpha_dropout", TF.feature_alpha_dropout, (3, 6, 4, 5), True, True),
]
DROPOUT_IDS = [f"{c[0]}-{len(c[2])}d" for c in DROPOUTS]


def _torch_mask(y, shape, feature, alpha, p, unbatched):
    """torch's keep mask, read back from its output, in the shape jaxnets' ``mask=`` takes."""
    dropped_value = _alpha_dropped(p) if alpha else 0.0
    kept = y != dropped_value
    if unbatched:
        kept = kept[None]
    if feature:
        per_channel = kept.reshape(kept.shape[:2] + (-1,))
        assert (per_channel.all(-1) | ~per_channel.any(-1)).all(), "torch dropped part of a channel"
        kept = per_channel.all(-1).reshape(kept.shape[:2] + (1,) * (kept.ndim - 2))
    return kept


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("name, torch_fn, shape, feature, alpha", DROPOUTS, ids=DROPOUT_IDS)
def test_dropout_given_torchs_mask_matches_torch(x64, name, torch_fn, shape, feature, alpha, p):
    x, cot = _normal(shape, 1), _normal(shape, 2)
    torch.manual_seed(int(p * 10))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fn(xt, p, True)
    (yt * torch.tensor(cot)).sum().backward()
    y_np = yt.detach().numpy()
    unbatched = name in ("dropout1d", "dropout3d") and len(shape) in (2, 4)
    mask = _torch_mask(y_np, shape, feature, alpha, p, unbatched)
    assert mask.any() and not mask.all(), "pick a seed where torch both keeps and drops"
    fn = getattr(F, name)
    y, vjp = jax.vjp(lambda x: fn(x, p, True, mask=jax.device_put(mask)), jax.device_put(x))
    _close(y, y_np, f"{name} output")
    _close(vjp(jax.device_put(cot))[0], xt.grad.numpy(), f"{name} input gradient")


@pytest.mark.parametrize("name, torch_fn, shape, feature, alpha", DROPOUTS, ids=DROPOUT_IDS)
def test_dropout_edge_probabilities_and_eval_match_torch(x64, name, torch_fn, shape, feature, alpha):
    x = _normal(shape, 3)
    fn = getattr(F, name)
    for p, training in [(0.0, True), (1.0, True), (0.5, False), (1.0, False)]:
        want = torch_fn(torch.tensor(x), p, training).numpy()
        have = fn(jax.device_put(x), p, training)  # no key needed: nothing random happens here
        np.testing.assert_array_equal(np.asarray(have), want, err_msg=f"{name} p={p} training={training}")
    grad = jax.grad(lambda x: fn(x, 1.0, True).sum())(jax.device_put(x))
    np.testing.assert_array_equal(np.asarray(grad), np.zeros(shape))


DROPOUT_CLASSES = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"]


@pytest.mark.parametrize("cls", DROPOUT_CLASSES)
def test_dropout_layer_is_identity_in_eval_and_random_in_train(x64, cls):
    shape = {"Dropout1d": (2, 4, 5), "Dropout2d": (2, 4, 3, 5)}.get(cls, (2, 4, 3, 5, 2))
    x = jax.device_put(_normal(shape, 4)) + 10  # all positive, so no kept value is the dropped value
    layer = getattr(nn, cls)(0.5, rngs=nnx.Rngs(0))
    assert repr(getattr(torch.nn, cls)(0.5)).endswith(f"({layer.extra_repr()})")
    np.testing.assert_array_equal(np.asarray(layer.eval()(x)), np.asarray(x))
    layer.train()
    first, second = np.asarray(layer(x)), np.asarray(layer(x))
    assert not np.array_equal(first, second), "the rng stream must advance between calls"
    assert not np.array_equal(first, np.asarray(x))


@pytest.mark.parametrize("p", [0.3, 0.7])
@pytest.mark.parametrize("name, torch_fn, shape, feature, alpha", DROPOUTS, ids=DROPOUT_IDS)
def test_dropout_random_masks_have_torchs_structure_and_scale(x64, name, torch_fn, shape, feature, alpha, p):
    big = (40, 50) + shape[-(len(shape) - 2) :] if len(shape) > 2 else (40, 50)
    if name in ("dropout1d", "dropout3d") and len(shape) in (2, 4):
        big = (50,) + shape[1:]  # unbatched
    x = jax.device_put(np.abs(_normal(big, 5)) + 1)
    y = np.asarray(getattr(F, name)(x, p, True, key=jax.random.key(7)))
    x = np.asarray(x)
    if alpha:
        a = 1.0 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
        kept = y != _alpha_dropped(p)
        _close(y[kept], a * x[kept] + ALPHA * a * p)
    else:
        kept = y != 0
        _close(y[kept], x[kept] / (1 - p))
    if feature:
        flat = kept.reshape(kept.shape[:2] + (-1,)) if kept.ndim == len(big) and len(big) > 2 else kept[..., None]
        if name in ("dropout1d", "dropout3d") and len(shape) in (2, 4):
            flat = kept.reshape(kept.shape[0], -1)[None]
        assert (flat.all(-1) | ~flat.any(-1)).all(), "a channel was dropped in part"
        rate = 1 - flat.all(-1).mean()
        n = flat.shape[0] * flat.shape[1]
    else:
        rate, n = 1 - kept.mean(), kept.size
    # The drop rate is a binomial proportion: 6 standard errors fail only on a wrong p.
    assert abs(rate - p) < 6 * math.sqrt(p * (1 - p) / n), (rate, p, n)


def test_dropout_jits_differentiates_and_vmaps(x64):
    x = jax.device_put(_normal((3, 4, 5), 6))
    f = jax.jit(lambda x, key: F.dropout1d(x, 0.4, True, key=key))
    key = jax.random.key(1)
    y = f(x, key)
    grad = jax.grad(lambda x: (f(x, key) * x).sum())(x)
    _close(grad, 2 * np.asarray(y))  # d/dx of x * m * x is 2 x m
    keys = jax.random.split(jax.random.key(2), 3)
    mapped = jax.vmap(lambda x, k: F.feature_alpha_dropout(x, 0.4, True, key=k))(x, keys)
    for i in range(3):
        _close(mapped[i], F.feature_alpha_dropout(x[i], 0.4, True, key=keys[i]))
    layer = nn.Dropout2d(0.5, rngs=nnx.Rngs(3))
    z = jax.device_put(_normal((2, 6, 3, 3), 7))
    run = nnx.jit(lambda m, z: m(z))
    assert not np.array_equal(np.asarray(run(layer, z)), np.asarray(run(layer, z)))
    np.testing.assert_array_equal(np.asarray(run(layer.eval(), z)), np.asarray(z))


KEYS = {
    "threefry": lambda: jax.random.key(11),
    "legacy_uint32": lambda: jax.random.PRNGKey(12),
    "rbg": lambda: jax.random.key(13, impl="rbg"),  # not threefry: jax.random.bits itself
}


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 2), (64, 3, 128)], ids=str)
@pytest.mark.parametrize("kind", KEYS)
def test_dropout_mask_bits_are_jax_random_bits(kind, shape):
    key = KEYS[kind]()
    want = np.asarray(jax.random.bits(key, shape, jnp.uint32))
    with jax.threefry_partitionable(True):  # the scheme the in-line hash reproduces (JAX's default)
        np.testing.assert_array_equal(np.asarray(_random.bits32(key, shape)), want)
        np.testing.assert_array_equal(np.asarray(jax.jit(_random.bits32, static_argnums=1)(key, shape)), want)
        keys = jax.random.split(jax.random.key(14), 3)
        mapped = jax.vmap(lambda k: _random.bits32(k, shape))(keys)
        for i in range(3):
            np.testing.assert_array_equal(
                np.asarray(mapped[i]), np.asarray(jax.random.bits(keys[i], shape, jnp.uint32))
            )


def test_dropout_unrolled_threefry_is_jaxs_hash():
    rng = np.random.default_rng(15)
    k0, k1 = (jax.device_put(rng.integers(0, 2**32, (), np.uint64).astype(np.uint32)) for _ in range(2))
    x0, x1 = (jax.device_put(rng.integers(0, 2**32, 1000, np.uint64).astype(np.uint32)) for _ in range(2))
    want = threefry2x32_p.bind(k0, k1, x0, x1)
    have = _random.threefry2x32(k0, k1, x0, x1)
    for h, w in zip(have, want, strict=True):
        np.testing.assert_array_equal(np.asarray(h), np.asarray(w))


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 1 / 3, 1e-12, 1 - 1e-12])
def test_dropout_keep_mask_is_bits_at_or_above_p_times_2_to_the_32(p):
    key, shape = jax.random.key(16), (4096,)
    bits = np.asarray(jax.random.bits(key, shape, jnp.uint32)).astype(np.uint64)
    drop = min(max(round(p * 2**32), 1), 2**32 - 1)  # p rounded to a multiple of 2**-32, inside (0, 1)
    np.testing.assert_array_equal(np.asarray(_random.keep_mask(key, p, shape)), bits >= drop)
    assert _random.keep_mask(key, 0.25, shape).sum() == (bits >= 2**30).sum()


@pytest.mark.parametrize("shape", [(1,), (31,), (33, 5), (3, 1000), (64, 32, 128)])
def test_dropout_keep_mask_packed_in_words_is_the_same_mask_at_any_size(shape):
    # keep_mask packs the mask 32 elements to a word; sizes that are not a multiple of 32 hash past the end.
    key = jax.random.key(5)
    want = np.asarray(jax.random.bits(key, shape, jnp.uint32)) >= np.uint32(round(0.3 * 2**32))
    np.testing.assert_array_equal(np.asarray(_random.keep_mask(key, 0.3, shape)), want)
    np.testing.assert_array_equal(np.asarray(jax.jit(_random.keep_mask, static_argnums=(1, 2))(key, 0.3, shape)), want)


def test_dropout_keep_mask_outside_jit_is_one_program_per_shape(backend_compiles):
    # Eager dropout (a layer called outside jit) draws its mask as one compiled program, not one per operation of
    # the twenty hash rounds (about 200), and a second mask of that shape compiles nothing.
    key, other = jax.random.key(3), jax.random.key(4)
    backend_compiles.clear()
    mask = _random.keep_mask(key, np.float64(0.3), [7, 11])  # a NumPy p and a list shape are taken as they are
    assert backend_compiles == ["jit(_keep_mask)"], backend_compiles
    again = _random.keep_mask(other, 0.3, (7, 11))
    assert backend_compiles == ["jit(_keep_mask)"], backend_compiles
    assert mask.shape == again.shape == (7, 11) and not np.array_equal(mask, again)


def test_dropout_keep_mask_is_exact_at_p_0_and_1():
    key, shape = jax.random.key(16), (3, 4096)
    assert np.asarray(_random.keep_mask(key, 0.0, shape)).all()
    assert not np.asarray(_random.keep_mask(key, 1.0, shape)).any()  # the clamp would keep 2**-32 of them


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_drops_each_element_with_probability_p(p):
    n = 2**22
    y = np.asarray(F.dropout(jnp.ones((2**10, 2**12), jnp.float32), p, True, key=jax.random.key(17)))
    rate = (y == 0).mean()
    # A binomial proportion over 4M elements: 5 standard errors (1.5e-4 at p = 0.1) pass a right p by chance with
    # probability 6e-7 and fail p rounded to 8 bits (0.1 -> 26/256 = 0.1016, 11 standard errors off).
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n), (rate, p)
    np.testing.assert_array_equal(y[y != 0], np.float32(1 / (1 - p)))


def test_attention_dropout_draws_the_same_keep_mask_as_dropout():
    rng = np.random.default_rng(18)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 3, 64, 8)), jnp.float32) for _ in range(3))
    key = jax.random.key(19)
    drawn = F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, rng=key)
    given = F.scaled_dot_product_attention(
        q, k, v, dropout_p=0.3, dropout_mask=_random.keep_mask(key, 0.3, (2, 3, 64, 64))
    )
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(given))
    mask = np.asarray(_random.keep_mask(key, 0.3, (2, 3, 64, 64)))
    assert abs((1 - mask.mean()) - 0.3) < 5 * math.sqrt(0.3 * 0.7 / mask.size)


def test_dropout_mask_compiles_to_one_fused_loop_on_cpu():
    """The mask's hash is plain uint32 arithmetic: no while loop (JAX's rolled CPU threefry) in the program."""
    x = jnp.ones((64, 512), jnp.float32)
    dropout = jax.jit(lambda x, key: F.dropout(x, 0.1, True, key=key)).lower(x, jax.random.key(0)).compile()
    bernoulli = jax.jit(lambda x, key: jnp.where(jax.random.bernoulli(key, 0.9, x.shape), x / 0.9, 0))
    if jax.default_backend() == "cpu":
        assert " while(" in bernoulli.lower(x, jax.random.key(0)).compile().as_text()  # what the test guards against
        assert " while(" not in dropout.as_text()


def test_dropout_refuses_bad_arguments_clearly():
    x = jnp.ones((2, 3, 4))
    for cls in DROPOUT_CLASSES:
        for p in (-0.1, 1.5):
            with pytest.raises(ValueError, match=f"between 0 and 1, but got {p}"):
                getattr(nn, cls)(p)
    for name in ("dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"):
        with pytest.raises(ValueError, match="between 0 and 1, but got 2"):
            getattr(F, name)(jnp.ones((2,)), 2, True)  # p is checked first, as in torch
        shape = {"dropout1d": (2, 3, 4), "dropout3d": (2, 3, 4, 5, 6)}.get(name, (2, 3, 4, 5))
        with pytest.raises(ValueError, match="needs random keys: pass key=jax.random.key"):
            getattr(F, name)(jnp.ones(shape), 0.5, True)
    with pytest.raises(ValueError, match="needs random keys: build it with rngs=nnx.Rngs"):
        nn.Dropout1d(0.5)(x)
    with pytest.raises(ValueError, match=r"Expected 2D or 3D input, but received a 4D input of shape \(1, 2, 3, 4\)"):
        F.dropout1d(jnp.ones((1, 2, 3, 4)), 0.5, True, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"requires at least 2 dimensions.*got shape \(5,\)"):
        F.feature_alpha_dropout(jnp.ones(5), 0.5, True, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3, 4\); expected \(2, 3, 1\)"):
        F.dropout1d(x, 0.5, True, mask=jnp.ones((2, 3, 4), bool))
    with pytest.warns(UserWarning, match="interpreted as shape \\(N, C, L\\)"):
        F.dropout2d(x, 0.5, False)


def test_parity_compare_refuses_every_dropout_variant_in_train_mode():
    from parity import compare

    for cls in DROPOUT_CLASSES:
        d = {"Dropout1d": 1, "Dropout3d": 3}.get(cls, 2)
        x = np.random.default_rng(0).normal(size=(2, 3) + (4,) * d)
        model = torch.nn.Sequential(getattr(torch.nn, f"Conv{d}d")(3, 3, 1), getattr(torch.nn, cls)(0.3))
        port = nn.Sequential(
            getattr(nn, f"Conv{d}d")(3, 3, 1, rngs=nnx.Rngs(0)), getattr(nn, cls)(0.3, rngs=nnx.Rngs(0))
        )
        with pytest.raises(ValueError, match="cannot match dropout masks in train mode.*active dropout in: 1"):
            compare(model, port, x, mode="train")
        assert compare(model, port, x, mode="eval").passed
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4))
    # A dropout on one side only (torch calls F.dropout in its forward; the port has a layer) is refused too.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Identity())
    port = nn.Sequential(nn.Conv2d(3, 3, 1, rngs=nnx.Rngs(0)), nn.Dropout2d(0.3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"active dropout in: 1 \(jax\)"):
        compare(model, port, x, mode="train")
    # torch's attention draws its own dropout mask without a Dropout submodule.
    mha = torch.nn.MultiheadAttention(4, 2, dropout=0.2, batch_first=True)
    port = nn.MultiheadAttention(4, 2, dropout=0.2, batch_first=True, rngs=nnx.Rngs(0))
    q = np.random.default_rng(1).normal(size=(2, 3, 4))
    with pytest.raises(ValueError, match=r"active dropout in: \(model\)"):
        compare(mha, port, q, q, q, mode="train")


# Interpolation ---------------------------------------------------------------

# (input shape, keyword arguments): every mode, size and scale_factor (integer, fractional, per axis,
# shrinking), align_corners both ways, recompute_scale_factor, and sizes where floor(i * scale) rounds.
INTERPOLATIONS = [
    ((2, 3, 5), dict(size=9, mode="nearest")),
    ((2, 3, 4, 5), dict(scale_factor=(2.0, 1.5), mode="nearest")),
    ((1, 2, 3, 4, 5), dict(size=(5, 3, 8), mode="nearest")),
    ((2, 3, 7), dict(scale_factor=0.6, mode="nearest")),
    ((2, 3, 7, 6), dict(scale_factor=1.7, mode="nearest", recompute_scale_factor=True)),
    ((2, 3, 5), dict(size=12, mode="nearest-exact")),
    ((2, 2, 6, 5), dict(scale_factor=(0.7, 2.3), mode="nearest-exact")),
    ((1, 2, 3, 4, 3), dict(scale_factor=2, mode="nearest-exact")),
    ((2, 3, 5), dict(size=11, mode="linear", align_corners=False)),
    ((2, 3, 6), dict(scale_factor=1.3, mode="linear", align_corners=True)),
    ((2, 3, 9), dict(size=4, mode="linear")),
    ((2, 3, 4, 5), dict(size=(7, 9), mode="bilinear", align_corners=False)),
    ((2, 3, 4, 5), dict(size=(7, 9), mode="bilinear", align_corners=True)),
    ((2, 3, 8, 6), dict(scale_factor=(0.5, 1.5), mode="bilinear")),
    ((2, 3, 5, 5), dict(scale_factor=2.5, mode="bilinear", recompute_scale_factor=True)),
    ((1, 2, 5, 4), dict(size=(1, 4), mode="bilinear", align_corners=True)),  # output 1 and unchanged axis
    ((2, 2, 4, 5), dict(size=(9, 6), mode="bicubic", align_corners=False)),
    ((2, 2, 4, 5), dict(scale_factor=1.75, mode="bicubic", align_corners=True)),
    ((2, 2, 9, 7), dict(size=(4, 3), mode="bicubic")),
    ((1, 2, 3, 4, 3), dict(size=(5, 6, 4), mode="trilinear", align_corners=False)),
    ((1, 2, 3, 4, 3), dict(scale_factor=(1.5, 0.75, 2.0), mode="trilinear", align_corners=True)),
    ((2, 3, 7), dict(size=3, mode="area")),
    ((2, 3, 7, 5), dict(scale_factor=(0.5, 1.6), mode="area")),
    ((1, 2, 6, 4, 5), dict(size=(3, 7, 2), mode="area")),
]


def _interp_id(case):
    shape, kw = case
    return f"{kw['mode']}-{len(shape) - 2}d-" + "-".join(f"{k}={v}" for k, v in kw.items() if k != "mode")


@pytest.mark.parametrize("shape, kw", INTERPOLATIONS, ids=[_interp_id(c) for c in INTERPOLATIONS])
def test_interpolate_matches_torch(x64, shape, kw):
    x = _normal(shape, 11)
    xt = torch.tensor(x, requires_grad=True)
    want = TF.interpolate(xt, **kw)
    g = _normal(tuple(want.shape), 12)
    want.backward(torch.tensor(g))

    @jax.jit
    def value_and_grad(x, g):
        y, vjp = jax.vjp(lambda x: F.interpolate(x, **kw), x)
        return y, vjp(g)[0]

    y, grad = value_and_grad(jax.device_put(x), jax.device_put(g))
    assert y.shape == tuple(want.shape)
    _close(y, want.detach().numpy(), "output")
    _close(grad, xt.grad.numpy(), "input gradient")


@pytest.mark.parametrize(
    "cls, args, kw",
    [
        ("Upsample", (), dict(scale_factor=1.5, mode="bilinear")),
        ("Upsample", (), dict(size=(3, 5, 4), mode="trilinear", align_corners=True)),
        ("UpsamplingNearest2d", (), dict(scale_factor=2)),
        ("UpsamplingBilinear2d", ((7, 9),), {}),
    ],
)
def test_upsampling_layers_match_torch(x64, cls, args, kw):
    shape = (2, 3, 4, 5, 3) if kw.get("mode") == "trilinear" else (2, 3, 4, 5)
    x = _normal(shape, 13)
    want = getattr(torch.nn, cls)(*args, **kw)(torch.tensor(x))
    _close(getattr(nn, cls)(*args, **kw)(jax.device_put(x)), want.numpy())


def test_interpolate_refuses_bad_arguments_clearly():
    x = jnp.ones((1, 2, 3, 4))
    with pytest.raises(ValueError, match="bilinear mode needs 4D input"):
        F.interpolate(jnp.ones((1, 2, 3)), size=4, mode="bilinear")
    with pytest.raises(ValueError, match="align_corners option can only be set"):
        F.interpolate(x, size=4, mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        F.interpolate(x, size=4, scale_factor=2)
    with pytest.raises(ValueError, match="either size or scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="expected one of 'nearest'"):
        F.interpolate(x, size=4, mode="cubic")
    with pytest.raises(ValueError, match="same number of spatial dimensions"):
        F.interpolate(x, scale_factor=(2, 2, 2))
    with pytest.raises(ValueError, match="1 to 3 spatial dimensions"):
        F.interpolate(jnp.ones((2, 3)), size=4)
    with pytest.raises(ValueError, match="greater than 0"):
        F.interpolate(x, scale_factor=0.2)
    with pytest.raises(NotImplementedError, match="antialias"):
        F.interpolate(x, size=4, mode="bilinear", antialias=True)


# one_hot and scaled_dot_product_attention ----------------------------------


def test_one_hot_matches_torch():
    t = np.array([[0, 3, 1], [2, 2, 0]])
    for n in (-1, 4, 6):
        want = TF.one_hot(torch.tensor(t), n).numpy()
        have = F.one_hot(jax.device_put(t), n)
        np.testing.assert_array_equal(np.asarray(have), want)
    np.testing.assert_array_equal(np.asarray(jax.jit(F.one_hot, static_argnums=1)(jax.device_put(t), 5)), np.eye(5)[t])
    with pytest.raises(ValueError, match="smaller than num_classes=3; got 3"):
        F.one_hot(jax.device_put(t), 3)
    with pytest.raises(ValueError, match="non-negative; got the minimum -1"):
        F.one_hot(jnp.asarray([-1, 0]), 3)
    with pytest.raises(TypeError, match="integer dtype; got float32"):
        F.one_hot(jnp.asarray([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="pass num_classes explicitly"):
        jax.jit(F.one_hot)(jax.device_put(t))


# (query shape, key shape, value shape, keyword arguments); masks are drawn in the test from their name.
SDPA = [
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), {}),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), dict(attn_mask="bool", scale=0.3)),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), dict(attn_mask="bool-empty-row")),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), dict(attn_mask="float")),
    ((2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 8), dict(is_causal=True)),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), dict(is_causal=True)),  # L < S: top-left aligned
    ((4, 5, 6), (4, 7, 6), (4, 7, 3), dict(attn_mask="float")),  # 3D, no head dimension
    ((2, 6, 4, 8), (2, 2, 6, 8), (2, 2, 6, 5), dict(enable_gqa=True, attn_mask="bool")),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), dict(dropout_p=0.3, attn_mask="float")),
    ((2, 6, 5, 8), (2, 3, 5, 8), (2, 3, 5, 5), dict(dropout_p=0.5, is_causal=True, enable_gqa=True)),
]


def _sdpa_id(case):
    return f"{len(case[0])}d-" + "-".join(f"{k}={v}" for k, v in case[3].items()) if case[3] else f"{len(case[0])}d"


@pytest.mark.parametrize("qs, ks, vs, kw", SDPA, ids=[_sdpa_id(c) for c in SDPA])
def test_scaled_dot_product_attention_matches_torch(x64, qs, ks, vs, kw):
    kw = dict(kw)
    rng = np.random.default_rng(14)
    q, k, v = (rng.normal(size=s) for s in (qs, ks, vs))
    L, S = qs[-2], ks[-2]
    kind = kw.pop("attn_mask", None)
    mask = None
    if kind == "float":
        mask = rng.normal(size=(L, S))
    elif kind is not None:  # a different boolean mask per batch item, broadcast over the heads
        mask = rng.random(size=(qs[0], 1, L, S) if len(qs) == 4 else (L, S)) > 0.3
        mask[..., 0] = True  # every query attends somewhere, except
        if kind == "bool-empty-row":
            mask[..., 1, :] = False  # query 1, which attends nowhere: torch gives zeros there
    ts = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    tmask = None if mask is None else torch.tensor(mask)
    p = kw.get("dropout_p", 0.0)
    if p:
        heads = qs[-3]
        keep = rng.random(size=qs[:-2] + (L, S)) > p
        math_kw = {k_: v_ for k_, v_ in kw.items() if k_ != "dropout_p"}
        t_k, t_v = ts[1], ts[2]
        if kw.get("enable_gqa"):  # the math kernel takes the repeated heads
            t_k = t_k.repeat_interleave(heads // ks[-3], -3)
            t_v = t_v.repeat_interleave(heads // ks[-3], -3)
            math_kw.pop("enable_gqa")
        want = torch.ops.aten._scaled_dot_product_attention_math(
            ts[0], t_k, t_v, tmask, p, dropout_mask=torch.tensor(keep), **math_kw
        )[0]
    else:
        keep = None
        want = TF.scaled_dot_product_attention(*ts, attn_mask=tmask, **kw)
    g = rng.normal(size=tuple(want.shape))
    want.backward(torch.tensor(g))

    @jax.jit
    def value_and_grad(q, k, v, g):
        def f(q, k, v):
            m = None if mask is None else jax.device_put(mask)
            return F.scaled_dot_product_attention(q, k, v, m, dropout_mask=keep, **kw)

        y, vjp = jax.vjp(f, q, k, v)
        return y, vjp(g)

    y, grads = value_and_grad(*map(jax.device_put, (q, k, v, g)))
    _close(y, want.detach().numpy(), "output")
    for name, have, t in zip("qkv", grads, ts, strict=True):
        _close(have, t.grad.numpy(), f"gradient of {name}")


def test_scaled_dot_product_attention_random_dropout_drops_weights_at_rate_p(x64):
    rng = np.random.default_rng(15)
    q, k = jax.device_put(rng.normal(size=(4, 8, 16, 8))), jax.device_put(rng.normal(size=(4, 8, 32, 8)))
    eye = jnp.eye(32, dtype=q.dtype)  # value = identity: the output is the (dropped) attention weights
    p = 0.3
    y = np.asarray(jax.jit(F.scaled_dot_product_attention, static_argnums=4)(q, k, eye, None, p, rng=jax.random.key(3)))
    weights = np.asarray(F.scaled_dot_product_attention(q, k, eye))
    kept = y != 0
    rate = 1 - kept.mean()
    assert abs(rate - p) < 6 * math.sqrt(p * (1 - p) / y.size), rate  # 6 standard errors
    _close(y[kept], weights[kept] / (1 - p))
    with pytest.raises(ValueError, match="needs random keys: pass rng=jax.random.key"):
        F.scaled_dot_product_attention(q, k, eye, dropout_p=0.1)
    with pytest.raises(ValueError, match="should not be set when is_causal=True"):
        F.scaled_dot_product_attention(q, k, eye, jnp.ones((16, 32), bool), is_causal=True)
    with pytest.raises(ValueError, match="must be a multiple of the key's"):
        F.scaled_dot_product_attention(q, k[:, :3], eye[None, None].repeat(3, 1), enable_gqa=True)


# Shuffles, normalize and distances ------------------------------------------

# (jaxnets / torch function name, input shapes, arguments); row 0 of the inputs is zero where marked, to reach
# the eps clamps (torch clamps the norm's value, not its gradient).
REARRANGE = [
    ("pixel_shuffle", [(2, 12, 3, 4)], (2,), False),
    ("pixel_shuffle", [(18, 2, 3)], (3,), False),  # unbatched
    ("pixel_unshuffle", [(2, 3, 4, 6)], (2,), False),
    ("channel_shuffle", [(2, 6, 3, 2)], (3,), False),
    ("normalize", [(4, 5, 3)], (2.0, 1), True),
    ("normalize", [(4, 5)], (1.0, -1), True),
    ("normalize", [(3, 4, 5)], (3.0, 2), False),
    ("cosine_similarity", [(4, 5), (4, 5)], (1,), True),
    ("cosine_similarity", [(3, 1, 6), (1, 4, 6)], (-1,), False),  # broadcast
    ("pairwise_distance", [(4, 5), (4, 5)], (2.0, 1e-6, True), False),
]


@pytest.mark.parametrize("name, shapes, args, zero_row", REARRANGE, ids=[f"{c[0]}-{c[1]}" for c in REARRANGE])
def test_shuffles_normalize_and_distances_match_torch(x64, name, shapes, args, zero_row):
    xs = [_normal(s, 16 + i) for i, s in enumerate(shapes)]
    if zero_row:
        xs[0][0] = 0.0
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    want = getattr(TF, name)(*ts, *args)
    g = _normal(tuple(want.shape), 20)
    want.backward(torch.tensor(g))

    @jax.jit
    def value_and_grad(xs, g):
        y, vjp = jax.vjp(lambda *xs: getattr(F, name)(*xs, *args), *xs)
        return y, vjp(g)

    y, grads = value_and_grad([jax.device_put(x) for x in xs], jax.device_put(g))
    _close(y, want.detach().numpy(), "output")
    for i, (have, t) in enumerate(zip(grads, ts, strict=True)):
        _close(have, t.grad.numpy(), f"gradient of input {i}")


def test_shuffle_and_distance_layers_match_torch_and_refuse_bad_shapes(x64):
    x = _normal((2, 8, 4, 6), 21)
    for cls, arg in (("PixelShuffle", 2), ("PixelUnshuffle", 2), ("ChannelShuffle", 4)):
        _close(getattr(nn, cls)(arg)(jax.device_put(x)), getattr(torch.nn, cls)(arg)(torch.tensor(x)).numpy(), cls)
    a, b = _normal((3, 7), 22), _normal((3, 7), 23)
    for cls in ("CosineSimilarity", "PairwiseDistance"):
        want = getattr(torch.nn, cls)()(torch.tensor(a), torch.tensor(b)).numpy()
        _close(getattr(nn, cls)()(jax.device_put(a), jax.device_put(b)), want, cls)
    with pytest.raises(ValueError, match=r"C \* upscale_factor\*\*2.*got shape \(2, 8, 4, 6\) and upscale_factor=3"):
        F.pixel_shuffle(jax.device_put(x), 3)
    with pytest.raises(ValueError, match="divisible by downscale_factor"):
        F.pixel_unshuffle(jax.device_put(x), 5)
    with pytest.raises(ValueError, match="C divisible by groups"):
        F.channel_shuffle(jax.device_put(x), 3)


# Max unpooling ----------------------------------------------------------------

# (class dims, input shape of the pooling, kernel, stride, padding, output_size); torch's own max-pool indices
UNPOOLS = [
    (1, (2, 3, 8), 2, None, 0, None),
    (2, (2, 3, 6, 7), 2, 2, 1, [6, 7]),  # padded: the default size (6, 6) would not hold index 40
    (2, (3, 5, 6), (2, 3), None, 0, [1, 3, 5, 7]),  # unbatched, output_size with N, C, larger than the default
    (3, (1, 2, 4, 6, 4), 2, None, 0, None),
]


@pytest.mark.parametrize("n, shape, kernel, stride, padding, output_size", UNPOOLS)
def test_max_unpool_matches_torch(x64, n, shape, kernel, stride, padding, output_size):
    x = torch.tensor(_normal(shape, 24))
    pooled, idx = getattr(TF, f"max_pool{n}d")(x, kernel, stride, padding, return_indices=True)
    pooled = pooled.detach().requires_grad_(True)
    torch_layer = getattr(torch.nn, f"MaxUnpool{n}d")(kernel, stride, padding)
    want = torch_layer(pooled, idx, output_size)
    g = _normal(tuple(want.shape), 25)
    want.backward(torch.tensor(g))
    layer = getattr(nn, f"MaxUnpool{n}d")(kernel, stride, padding)
    jidx = jax.device_put(idx.numpy().copy())

    @jax.jit
    def value_and_grad(p, g):
        y, vjp = jax.vjp(lambda p: layer(p, jidx, output_size), p)
        return y, vjp(g)[0]

    y, grad = value_and_grad(jax.device_put(pooled.detach().numpy().copy()), jax.device_put(g))
    _close(y, want.detach().numpy(), "output")
    _close(grad, pooled.grad.numpy(), "input gradient")


def test_max_unpool_refuses_bad_arguments_clearly():
    x, idx = jnp.ones((1, 2, 3, 3)), jnp.zeros((1, 2, 3, 3), int)
    with pytest.raises(ValueError, match=r"invalid output_size \[9, 6\] \(dim 0 must be between 4 and 8"):
        F.max_unpool2d(x, idx, 2, output_size=(9, 6))
    with pytest.raises(ValueError, match="found an invalid max index 36"):
        F.max_unpool2d(x, idx.at[0, 0, 0, 0].set(36), 2)
    with pytest.raises(ValueError, match="must have the input's shape"):
        F.max_unpool2d(x, idx[0], 2)
    with pytest.raises(ValueError, match="with 2 spatial dimension"):
        F.max_unpool2d(jnp.ones((2, 3)), jnp.zeros((2, 3), int), 2)


# Unfold and Fold ----------------------------------------------------------------

FOLDS = [
    ((2, 3, 7, 8), dict(kernel_size=3)),
    ((3, 6, 5), dict(kernel_size=(2, 3), dilation=(2, 1), padding=1, stride=(2, 3))),  # unbatched
]


@pytest.mark.parametrize("shape, kw", FOLDS)
def test_unfold_and_fold_match_torch(x64, shape, kw):
    x = _normal(shape, 26)
    xt = torch.tensor(x, requires_grad=True)
    cols = torch.nn.Unfold(**kw)(xt)
    c = torch.tensor(_normal(tuple(cols.shape), 27), requires_grad=True)
    back = torch.nn.Fold(shape[-2:], **kw)(c)
    g1, g2 = _normal(tuple(cols.shape), 28), _normal(tuple(back.shape), 29)
    (cols * torch.tensor(g1)).sum().add((back * torch.tensor(g2)).sum()).backward()
    unfold_layer, fold_layer = nn.Unfold(**kw), nn.Fold(shape[-2:], **kw)

    @jax.jit
    def value_and_grad(x, c, g1, g2):
        (y1, y2), vjp = jax.vjp(lambda x, c: (unfold_layer(x), fold_layer(c)), x, c)
        return y1, y2, vjp((g1, g2))

    y1, y2, (gx, gc) = value_and_grad(*map(jax.device_put, (x, c.detach().numpy(), g1, g2)))
    _close(y1, cols.detach().numpy(), "unfold")
    _close(y2, back.detach().numpy(), "fold")
    _close(gx, xt.grad.numpy(), "unfold's input gradient")
    _close(gc, c.grad.numpy(), "fold's input gradient")
    with pytest.raises(ValueError, match="dim -1 must be the"):
        F.fold(jnp.ones((2, 27, 5)), (7, 8), 3)
    with pytest.raises(ValueError, match="unfold expects 3D"):
        F.unfold(jnp.ones((2, 3, 4, 5, 6)), 2)


@pytest.mark.parametrize(
    "cin, cout, k, stride, padding, output_padding, groups, dilation, size",
    [
        (6, 4, 4, 2, 1, 0, 1, 1, 5),  # DCGAN's upsampling stage
        (8, 6, 4, 1, 0, 0, 1, 1, 1),  # DCGAN's first stage: 1x1 noise to 4x4
        (6, 4, 3, 2, 1, 1, 2, 1, 5),
        (4, 6, 3, 1, 0, 0, 1, 2, 4),
        (4, 2, 5, 3, 2, 2, 2, 1, 3),
    ],
    ids=["dcgan-up", "dcgan-first", "groups-output-padding", "dilation", "stride3"],
)
def test_conv_transpose_values_gradients_and_jvp_match_torch(
    x64, cin, cout, k, stride, padding, output_padding, groups, dilation, size
):
    """On CPU the derivatives are the strided-slice adjoint's (a custom_jvp): reverse and forward mode both hold."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, cin, size, size)), rng.normal(size=(cin, cout // groups, k, k))
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = TF.conv_transpose2d(tx, tw, None, stride, padding, output_padding, groups, dilation)
    r = rng.normal(size=tuple(ty.shape))
    (ty * torch.from_numpy(r)).sum().backward()

    def f(x, w):
        return F.conv_transpose(x, w, None, stride, padding, output_padding, groups, dilation)

    y = f(jnp.asarray(x), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy(), rtol=F64_RTOL, atol=F64_ATOL)
    gx, gw = jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) * r), (0, 1)))(jnp.asarray(x), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(gx), tx.grad.numpy(), rtol=F64_RTOL, atol=F64_ATOL)
    np.testing.assert_allclose(np.asarray(gw), tw.grad.numpy(), rtol=F64_RTOL, atol=F64_ATOL)
    _, tangent = jax.jvp(f, (jnp.asarray(x), jnp.asarray(w)), (jnp.asarray(x), jnp.zeros_like(jnp.asarray(w))))
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(y), rtol=F64_RTOL, atol=F64_ATOL)  # linear in x
