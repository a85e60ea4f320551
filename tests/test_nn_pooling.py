"""jaxnets.nn pooling, padding and transposed convolution against torch where module_db is blind.

module_db's inputs are random, so max-pool ties (where the gradient's
tie-break rule shows) almost never happen there. Here the inputs are small
integers, so every window has ties by construction, and the gradient must go
where torch CPU sends it: the first maximal element in torch's scan order.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxnets import nn


def _ints(shape, seed, high=3):
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(np.float64)


def _torch_run(module, x, cot):
    t = torch.tensor(x, requires_grad=True)
    out = module(t)
    y = out[0] if isinstance(out, tuple) else out
    (y * torch.tensor(cot)).sum().backward()
    return out, t.grad.numpy()


def _jax_run(module, x, cot):
    # One compiled program for the output and the gradient: eagerly, every small op of the
    # window gathers compiles on its own (the 26 tie cases took 47 s of a make test run eagerly;
    # compiled, all 27 tie tests take 9 s on one worker).
    def loss(x):
        out = module(x)
        y = out[0] if isinstance(out, tuple) else out
        return (y * cot).sum()

    out, grad = jax.jit(lambda x: (module(x), jax.grad(loss)(x)))(jax.device_put(x))
    return out, np.asarray(grad)


MAX_POOLS = [
    ("MaxPool1d", (2, 3, 11), dict(kernel_size=3, stride=1)),
    ("MaxPool1d", (3, 10), dict(kernel_size=4, stride=2, padding=2, dilation=1, ceil_mode=True)),
    ("MaxPool1d", (2, 2, 12), dict(kernel_size=3, stride=2, dilation=2, padding=1)),
    ("MaxPool2d", (2, 3, 7, 8), dict(kernel_size=3, stride=1)),
    ("MaxPool2d", (2, 2, 9, 7), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True)),
    ("MaxPool2d", (2, 8, 8), dict(kernel_size=3, stride=2, dilation=2, padding=1)),
    ("MaxPool3d", (1, 2, 5, 6, 5), dict(kernel_size=3, stride=1, padding=1)),
    ("MaxPool3d", (2, 5, 6, 7), dict(kernel_size=(2, 3, 2), stride=(1, 2, 1), ceil_mode=True)),
    ("AdaptiveMaxPool1d", (2, 3, 10), dict(output_size=4)),
    ("AdaptiveMaxPool1d", (2, 3, 5), dict(output_size=7)),
    ("AdaptiveMaxPool2d", (2, 3, 7, 9), dict(output_size=(3, 4))),
    ("AdaptiveMaxPool2d", (3, 7, 9), dict(output_size=(None, 5))),
    ("AdaptiveMaxPool3d", (1, 2, 5, 7, 6), dict(output_size=(2, 3, 4))),
]


@pytest.mark.parametrize("high", [2, 3])
@pytest.mark.parametrize("name, shape, kwargs", MAX_POOLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(MAX_POOLS)])
def test_max_pool_ties_match_torch(x64, name, shape, kwargs, high):
    x = _ints(shape, seed=len(shape) * 7 + high, high=high)
    _assert_max_pool_is_torchs(name, kwargs, x)
    # The test has teeth: ties exist, and overlapping windows make gradients pile up on one element.
    assert len(np.unique(x)) <= high


def _assert_max_pool_is_torchs(name, kwargs, x):
    """``name``'s values, indices and input gradient equal torch's bit for bit (a random integer cotangent)."""
    kwargs = dict(kwargs, return_indices=True)
    cot = _cot(getattr(torch.nn, name)(**kwargs), x)
    t_out, t_grad = _torch_run(getattr(torch.nn, name)(**kwargs), x, cot)
    j_out, j_grad = _jax_run(getattr(nn, name)(**kwargs), x, cot)
    np.testing.assert_array_equal(np.asarray(j_out[0]), t_out[0].detach().numpy())
    np.testing.assert_array_equal(np.asarray(j_out[1]), t_out[1].numpy())
    np.testing.assert_array_equal(j_grad, t_grad)


def _cot(torch_module, x):
    with torch.no_grad():
        out = torch_module(torch.tensor(x))
    shape = (out[0] if isinstance(out, tuple) else out).shape
    return np.random.default_rng(1).integers(1, 5, size=shape).astype(np.float64)


def test_max_pool_tie_goes_to_first_element_in_scan_order(x64):
    # All equal: torch gives every window's gradient to its first element (top-left), summed over windows.
    x = np.ones((1, 1, 4, 4))
    _, grad = _jax_run(nn.MaxPool2d(3, stride=1), x, np.ones((1, 1, 2, 2)))
    want = np.zeros((1, 1, 4, 4))
    want[0, 0, :2, :2] = 1
    np.testing.assert_array_equal(grad, want)
    _, t_grad = _torch_run(torch.nn.MaxPool2d(3, stride=1), x, np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(t_grad, want)


@pytest.mark.parametrize(
    "name, kwargs",
    [("MaxPool2d", dict(kernel_size=2)), ("MaxPool2d", dict(kernel_size=3, stride=1, padding=1)),
     ("AdaptiveMaxPool2d", dict(output_size=(2, 3)))],
)  # fmt: skip
def test_max_pool_gives_a_nan_windows_gradient_to_its_last_nan_as_torch(x64, name, kwargs):
    # torch replaces the running maximum by every NaN it meets: the last NaN of a window is the pick.
    x = _ints((2, 3, 6, 6), seed=5, high=3)
    x[0, 0, 0, :2] = np.nan  # two NaNs in one window
    x[1, 2, 3, 3] = x[1, 2, 4, 5] = np.nan
    _assert_max_pool_is_torchs(name, kwargs, x)


@pytest.mark.parametrize(
    "name, kwargs",
    [("MaxPool1d", dict(kernel_size=3, stride=2, padding=1)),
     ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1)),
     ("MaxPool2d", dict(kernel_size=(2, 3), stride=1, padding=1, ceil_mode=True)),
     ("MaxPool3d", dict(kernel_size=3, stride=2, padding=1, dilation=2))],
)  # fmt: skip
def test_max_pool_never_picks_padding_when_the_input_is_minus_infinity(x64, name, kwargs):
    # The padding is -inf too, but torch scans only the input: a window of padding and real -inf values
    # gives its first real element (value, index and gradient), not the padding before it.
    n = int(name[-2])
    x = np.full((2, 3) + (5,) * n, -np.inf)
    x[1] = _ints((3,) + (5,) * n, seed=9)  # the second image finite: both kinds of window in one batch
    _assert_max_pool_is_torchs(name, kwargs, x)


@pytest.mark.parametrize("side", [2, 3], ids=["2x2-sliced", "3x3-argmax"])
def test_max_pool_pick_is_the_first_maximum_or_the_last_nan_over_several_window_axes(side):
    # The rule as LeNet's fast path calls it: windows on axes 1 and 3 of (Hp, k, Wp, k); both code paths.
    rng = np.random.default_rng(side)
    wins = rng.integers(0, 2, (40, side, side)).astype(np.float64)
    wins[rng.random(wins.shape) < 0.15] = np.nan
    flat = wins.reshape(40, -1)
    want = [int(np.flatnonzero(np.isnan(w))[-1]) if np.isnan(w).any() else int(np.argmax(w)) for w in flat]
    x = jax.device_put(wins.reshape(40, side, 1, side))
    pick = np.asarray(nn.functional.max_pool_pick(x, jnp.max(x, axis=(1, 3)), (1, 3))).reshape(40, -1)
    assert (pick.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(pick.argmax(axis=1), want)
    assert any(np.isnan(w).sum() > 1 for w in flat) and any((w == 1).sum() > 1 for w in flat)  # teeth
    # Without the NaN rule (a pool after a ReLU, whose gradient zeroes a NaN's): no pick in a NaN window,
    # the same pick elsewhere.
    bare = np.asarray(nn.functional.max_pool_pick(x, jnp.max(x, axis=(1, 3)), (1, 3), nans=False)).reshape(40, -1)
    has_nan = np.isnan(flat).any(axis=1)
    assert not bare[has_nan].any() and has_nan.any()
    np.testing.assert_array_equal(bare[~has_nan], pick[~has_nan])


PADS = [
    ("constant", (2, -1), (2, 3, 5), 1.5),
    ("constant", (-1, -2, 3, 0), (2, 4, 6), 0.0),
    ("constant", (1, 1, -1, 2, 0, -1), (1, 3, 4, 5), -2.0),
    ("reflect", (3, 1), (2, 5), None),
    ("reflect", (2, -1, -1, 3), (2, 4, 5), None),
    ("replicate", (4, -2, 0, 5), (1, 2, 3, 4), None),
    ("replicate", (1, 2, 3, 1, 2, 0), (1, 2, 3, 4, 3), None),
    ("circular", (2, 5), (2, 5), None),
    ("circular", (-1, 3, 2, -2), (1, 2, 4, 5), None),
    ("circular", (1, 0, 2, 3, 0, 1), (1, 2, 3, 4, 5), None),
    ("circular", (3, -1), (2, 5), None),
    ("circular", (-2, 2), (2, 5), None),
]


@pytest.mark.parametrize("mode, pad, shape, value", PADS)
def test_pad_matches_torch_including_negative_pads(x64, mode, pad, shape, value):
    x = np.random.default_rng(0).normal(size=shape)
    kw = {} if value is None else {"value": value}
    t = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.pad(t, pad, mode, **kw)
    cot = np.random.default_rng(1).normal(size=want.shape)
    (want * torch.tensor(cot)).sum().backward()

    def pad_and_grad(x):  # one compiled program: eager op-by-op dispatch compiles each gather on its own
        return nn.functional.pad(x, pad, mode, value), jax.grad(
            lambda x: (nn.functional.pad(x, pad, mode, value) * cot).sum()
        )(x)

    have, grad = jax.jit(pad_and_grad)(jax.device_put(x))
    np.testing.assert_array_equal(np.asarray(have), want.detach().numpy())
    np.testing.assert_allclose(
        np.asarray(grad), t.grad.numpy(), rtol=1e-12, atol=1e-15
    )  # summation order of piled-up gradients


def test_pad_rejects_bad_arguments_with_clear_errors():
    x = jnp.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="must be less than the size"):
        nn.functional.pad(x, (3, 0), "reflect")
    with pytest.raises(ValueError, match="padding length must be even"):
        nn.functional.pad(x, (1, 2, 3))
    with pytest.raises(ValueError, match="mode must be"):
        nn.functional.pad(x, (1, 1), "zeros")
    with pytest.raises(ValueError, match="pad should be at most half"):
        nn.MaxPool2d(2, padding=2)(jnp.zeros((1, 1, 6, 6)))
    with pytest.raises(ValueError, match="too small"):
        nn.MaxPool2d(5)(jnp.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="output padding must be smaller"):
        nn.ConvTranspose2d(2, 2, 3, stride=1, output_padding=1, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_transpose_init_bounds_are_torchs(n):
    # torch's default init: U(+-1/sqrt(fan_in)), fan_in = weight.size(1) * receptive field = out/groups * prod(k).
    cls = getattr(nn, f"ConvTranspose{n}d")
    m = cls(6, 8, 3, groups=2, rngs=nnx.Rngs(0))
    torch_m = getattr(torch.nn, f"ConvTranspose{n}d")(6, 8, 3, groups=2)
    assert m.weight[...].shape == tuple(torch_m.weight.shape)
    bound = 1 / np.sqrt(4 * 3**n)
    for p in (m.weight[...], m.bias[...]):
        assert float(jnp.max(jnp.abs(p))) <= bound
        assert float(jnp.max(jnp.abs(p))) > 0.8 * bound  # drawn over the whole range, not a smaller one
    assert float(torch_m.weight.detach().abs().max()) <= bound


def test_conv_transpose_output_size_matches_torch(x64):
    x = np.random.default_rng(0).normal(size=(2, 4, 5, 6))
    tm = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2, dilation=1).double()
    m = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2, rngs=nnx.Rngs(0)).double()
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    want = tm(torch.tensor(x), output_size=[10, 12]).detach().numpy()
    have = np.asarray(m(jax.device_put(x), output_size=[10, 12]))
    np.testing.assert_allclose(have, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="valid sizes range"):
        m(jax.device_put(x), output_size=[12, 12])


LAYERS = [
    (lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 8, 7)),
    (lambda: nn.MaxPool1d(2, return_indices=True), (2, 3, 8)),
    (lambda: nn.AvgPool3d(2, padding=1, count_include_pad=False), (2, 2, 4, 5, 3)),
    (lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 3, 7, 5)),
    (lambda: nn.AdaptiveMaxPool3d(2), (2, 2, 5, 4, 3)),
    (lambda: nn.LPPool2d(2.0, 2), (2, 3, 6, 6)),
    (lambda: nn.ReflectionPad2d((1, 2, 0, 1)), (2, 3, 4, 5)),
    (lambda: nn.CircularPad3d(1), (2, 2, 3, 3, 3)),
    (lambda: nn.ConstantPad1d((2, -1), 3.0), (2, 3, 5)),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=1, rngs=nnx.Rngs(0)).double(), (2, 3, 4, 5)),
]


@pytest.mark.parametrize("make, shape", LAYERS, ids=range(len(LAYERS)))
def test_every_layer_jits_grads_and_vmaps(x64, make, shape):
    module = make()
    graphdef, state = nnx.split(module)
    x = jax.device_put(np.random.default_rng(0).normal(size=shape))

    def first(out):
        return out[0] if isinstance(out, tuple) else out

    def forward(state, x):
        return first(nnx.merge(graphdef, state, copy=True)(x))

    # One compiled program: the single calls, the gradient and the vmapped pair (eager op-by-op calls compiled
    # every primitive anew and took most of this test's time; the other tests compare these layers with torch).
    @jax.jit
    def run(state, x):
        g = jax.grad(lambda x: (forward(state, x) ** 2).sum())(x)
        return forward(state, x), forward(state, -x), g, jax.vmap(forward, in_axes=(None, 0))(state, jnp.stack([x, -x]))

    single, single_neg, g, mapped = run(state, x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    np.testing.assert_allclose(np.asarray(mapped[0]), np.asarray(single), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(mapped[1]), np.asarray(single_neg), rtol=1e-12)
