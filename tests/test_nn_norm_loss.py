"""jaxnets.nn's normalisation, embedding and loss layers against torch, for what torch's module_db leaves out.

test_nn_module_db runs torch's own database for these classes; the cases here
are the ones it does not reach: running statistics over several steps and
``momentum=None``, float32 and RMSNorm's machine-epsilon rule, channel
windows wider than the input, torch's refusals, and jit / grad / vmap of every
layer, and generated shapes and options (hypothesis) for the layers most
ports use. float64 at F64_RTOL (see tolerances.py) unless a test says otherwise.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tolerances import F32_ATOL, F32_RTOL, F64_ATOL, F64_RTOL

from jaxnets import nn

torch.set_num_threads(1)  # torch and XLA share two cores in this process


def _close(have, want, what, rtol=F64_RTOL, atol=F64_ATOL):
    have, want = np.asarray(have), np.asarray(want)
    assert have.shape == want.shape, f"{what}: shape {have.shape}, torch {want.shape}"
    assert have.dtype == want.dtype, f"{what}: dtype {have.dtype}, torch {want.dtype}"
    # NaN exactly where torch has NaN (an all-ignored mean, an impossible alignment); the rest compared as numbers.
    np.testing.assert_array_equal(np.isnan(have), np.isnan(want), err_msg=f"{what}: NaN positions")
    scale = np.max(np.abs(want[~np.isnan(want)]), initial=0)
    np.testing.assert_allclose(have, want, rtol=0, atol=rtol * scale + atol, err_msg=what)


def _compare(torch_module, module, *inputs, steps=1, no_grad=(), rtol=F64_RTOL, atol=F64_ATOL):
    """Run both modules ``steps`` times on the same inputs; compare outputs, gradients and the state after each.

    ``inputs`` are NumPy arrays (or None, passed as it is); the floating-point ones not listed in
    ``no_grad`` (by position) are differentiated, with one random cotangent per
    output. The jaxnets side runs as a jitted function of its split state, as a
    training step would.
    """
    module.load_state_dict({k: v.detach().numpy().copy() for k, v in torch_module.state_dict().items()})
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    diff = [i for i, x in enumerate(inputs) if x is not None and np.issubdtype(x.dtype, np.floating)]
    diff = [i for i in diff if i not in no_grad]

    def forward(params, rest, xs):
        args = [None if x is None else jax.device_put(x) for x in inputs]
        for i, x in zip(diff, xs, strict=True):
            args[i] = x
        copy = nnx.merge(graphdef, params, rest, copy=True)
        return copy(*args), nnx.state(copy, ...)

    @jax.jit
    def step(params, rest, xs, cot):
        (out, state), vjp = jax.vjp(lambda p, x: forward(p, rest, x), params, xs)
        zero_state = jax.tree.map(jnp.zeros_like, state)
        return out, state, vjp((cot, zero_state))

    for k in range(steps):
        xt = [None if x is None else torch.from_numpy(x.copy()) for x in inputs]
        for i in diff:
            xt[i].requires_grad_(True)
        torch_module.zero_grad()
        out_t = torch_module(*xt)
        cot = np.random.default_rng(k).normal(size=tuple(out_t.shape)).astype(out_t.detach().numpy().dtype)
        if out_t.requires_grad:
            (out_t * torch.from_numpy(cot)).sum().backward()
        # Put on the device as they are: jnp.asarray of a NumPy array compiles an identity program per shape.
        xs = [jax.device_put(inputs[i]) for i in diff]
        out, state, (param_grads, input_grads) = step(params, rest, xs, cot)
        _close(out, out_t.detach().numpy(), f"step {k}: output", rtol, atol)
        for i, g in zip(diff, input_grads, strict=True):
            want = np.zeros(inputs[i].shape, inputs[i].dtype) if xt[i].grad is None else xt[i].grad.numpy()
            _close(g, want, f"step {k}: gradient of input {i}", rtol, atol)
        flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(param_grads)}
        for name, p in torch_module.named_parameters():
            want = np.zeros(tuple(p.shape), p.dtype == torch.float64 and np.float64 or np.float32)
            want = want if p.grad is None else p.grad.numpy()
            _close(flat[name][...], want, f"step {k}: gradient of {name}", rtol, atol)
        nnx.update(module, state)
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        for key, want in torch_module.state_dict().items():
            _close(module.state_dict()[key], want.numpy(), f"step {k}: {key} after the step", rtol, atol)


def _normal(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


# Normalisation ---------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("momentum", [0.1, 0.7, None], ids=["m0.1", "m0.7", "mNone"])
@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
def test_instance_norm_running_stats_over_steps_then_eval(x64, dims, momentum, affine):
    name = f"InstanceNorm{dims}d"
    kwargs = dict(momentum=momentum, affine=affine, track_running_stats=True)
    torch_module = getattr(torch.nn, name)(3, **kwargs).double()
    module = getattr(nn, name)(3, **kwargs).double()
    x = 2 + 3 * _normal(4, 3, *(5,) * dims)
    _compare(torch_module, module, x, steps=3)  # momentum=None leaves the statistics where they are, as torch
    torch_module.eval()
    module.eval()
    _compare(torch_module, module, _normal(2, 3, *(4,) * dims, seed=1))
    assert int(module.num_batches_tracked[...]) == 0  # torch keeps the buffer and never counts


def test_instance_norm_unbatched_tracking_and_errors(x64):
    torch_module = torch.nn.InstanceNorm2d(3, track_running_stats=True).double()
    module = nn.InstanceNorm2d(3, track_running_stats=True).double()
    _compare(torch_module, module, _normal(3, 4, 5), steps=2)
    with pytest.raises(ValueError, match=r"expected 3D or 4D input \(got 2D input\)"):
        module(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nn.InstanceNorm1d(3)(jnp.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match=r"size at dim=1 to match num_features \(3\), but got: 4"):
        nn.InstanceNorm1d(3, affine=True)(jnp.zeros((2, 4, 5)))
    with pytest.warns(UserWarning, match="does not match num_features"):
        nn.InstanceNorm1d(3)(jnp.ones((2, 4, 5)))
    with pytest.raises(TypeError, match="floating-point `input`; got dtype int"):
        nn.InstanceNorm1d(3)(jnp.ones((2, 3, 5), int))


@pytest.mark.parametrize(
    "groups, channels, shape",
    [(1, 4, (3, 4)), (2, 4, (2, 4, 7)), (4, 4, (2, 4, 3, 3)), (3, 6, (2, 6, 2, 3, 2)), (2, 6, (1, 6, 5))],
)
@pytest.mark.parametrize(
    "affine, bias", [(True, True), (True, False), (False, False)], ids=["affine", "nobias", "none"]
)
def test_group_norm_matches_torch(x64, groups, channels, shape, affine, bias):
    torch_module = torch.nn.GroupNorm(groups, channels, affine=affine, bias=bias).double()
    module = nn.GroupNorm(groups, channels, affine=affine, bias=bias).double()
    if affine:  # non-trivial affine parameters
        torch.nn.init.normal_(torch_module.weight)
        if bias:
            torch.nn.init.normal_(torch_module.bias)
    _compare(torch_module, module, 1 + 2 * _normal(*shape))


def test_group_norm_refusals():
    with pytest.raises(ValueError, match=r"num_channels \(6\) must be divisible by num_groups \(4\)"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="expected 6 channels on dim 1"):
        nn.GroupNorm(3, 6)(jnp.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.functional.group_norm(jnp.zeros((1, 3)), 3)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.functional.group_norm(jnp.zeros((6,)), 3)
    with pytest.raises(TypeError, match="floating-point"):
        nn.GroupNorm(3, 6)(jnp.zeros((2, 6, 3), jnp.int32))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("eps", [None, 1e-3], ids=["eps_None", "eps1e-3"])
@pytest.mark.parametrize("shape, normalized", [((3, 4), [4]), ((2, 3, 4), [3, 4]), ((2, 5), 5)])
def test_rms_norm_matches_torch_including_the_eps_rule(x64, dtype, eps, shape, normalized):
    # Inputs of order 1e-4: mean(x**2) ~ 1e-8, so eps=finfo(float32).eps (1.2e-7) against finfo(float64).eps
    # (2.2e-16) changes the output by about 90%, and a fixed guess at either fails one of the dtypes.
    torch_module = torch.nn.RMSNorm(normalized, eps=eps).to(getattr(torch, dtype))
    with torch.no_grad():
        torch_module.weight.normal_()
    module = nn.RMSNorm(normalized, eps=eps, dtype=getattr(jnp, dtype))
    tol = {} if dtype == "float64" else dict(rtol=F32_RTOL, atol=F32_ATOL)
    _compare(torch_module, module, 1e-4 * _normal(*shape, dtype=np.dtype(dtype)), **tol)


def test_rms_norm_refusals():
    with pytest.raises(ValueError, match=r"Given normalized_shape=\[4\], expected input with shape \[\*4\]"):
        nn.RMSNorm(4)(jnp.zeros((2, 3)))


@pytest.mark.parametrize(
    "size, shape", [(1, (2, 4, 5)), (2, (2, 4, 5)), (4, (1, 3, 5)), (7, (2, 3, 2, 2)), (3, (1, 5, 2, 1, 2, 2))]
)
def test_local_response_norm_windows_wider_than_the_input_and_high_ranks(x64, size, shape):
    torch_module = torch.nn.LocalResponseNorm(size, alpha=0.3, beta=0.6, k=0.5)
    module = nn.LocalResponseNorm(size, alpha=0.3, beta=0.6, k=0.5)
    _compare(torch_module, module, 2 * _normal(*shape))


def test_local_response_norm_refusals():
    with pytest.raises(ValueError, match=r"Expected 3D or higher dimensionality input \(got 2 dimensions\)"):
        nn.LocalResponseNorm(2)(jnp.zeros((2, 3)))
    assert nn.LocalResponseNorm(2)(jnp.zeros((2, 3, 0))).shape == (2, 3, 0)


# Embedding -------------------------------------------------------------------


def _embedding_pair(*args, weight_seed=0, **kwargs):
    torch_module = torch.nn.Embedding(*args, **kwargs).double()
    with torch.no_grad():  # integer-free values, and the padding row nonzero so that its zero gradient means something
        torch_module.weight.copy_(torch.from_numpy(_normal(*torch_module.weight.shape, seed=weight_seed)))
    return torch_module, nn.Embedding(*args, **kwargs, rngs=nnx.Rngs(0)).double()


@pytest.mark.parametrize("padding_idx", [None, 0, 3, -1, -5], ids=lambda p: f"pad{p}")
@pytest.mark.parametrize("scale_grad_by_freq", [False, True], ids=["plain", "freq"])
def test_embedding_padding_and_frequency_gradients(x64, padding_idx, scale_grad_by_freq):
    torch_module, module = _embedding_pair(5, 3, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq)
    indices = np.array([[0, 3, 4, 3], [4, 4, 1, 0], [3, 3, 3, 2]])
    _compare(torch_module, module, indices)
    if padding_idx is not None:
        grad = jax.grad(lambda w: jnp.sum(nn.functional.embedding(jax.device_put(indices), w, padding_idx) ** 2))(
            jnp.ones((5, 3))
        )
        assert not np.any(np.asarray(grad)[padding_idx]), "the padding row got a gradient"
        assert np.all(np.asarray(grad)[[i for i in range(5) if i != padding_idx % 5 and i in indices]] != 0)


def test_embedding_init_is_torchs_law_with_the_padding_row_zero():
    import parity

    report = parity.check_init(torch.nn.Embedding, nn.Embedding, 60, 50, padding_idx=-2)
    assert report.passed, str(report)
    weight = np.asarray(nn.Embedding(6, 4, padding_idx=-2, rngs=nnx.Rngs(0)).weight[...])
    assert not np.any(weight[4]) and np.all(weight[[0, 1, 2, 3, 5]] != 0)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")], ids=["p2", "p1", "p3", "pinf"])
def test_embedding_max_norm_renormalises_the_referenced_rows_in_place(x64, norm_type):
    torch_module, module = _embedding_pair(6, 4, max_norm=0.9, norm_type=norm_type, padding_idx=1)
    before = torch_module.weight.detach().numpy().copy()
    # Two calls: the second sees the rows the first rescaled and rescales row 4 too; row 5 is never referenced.
    # torch renormalises the padding row too when it is referenced (row 1 here), and so does the mirror.
    _compare(torch_module, module, np.array([[0, 2, 2], [1, 3, 0]]), steps=1)
    after = np.asarray(module.weight[...])
    assert np.array_equal(after[[4, 5]], before[[4, 5]]), "a row the input does not refer to changed"
    norm = nn.functional.vector_norm
    referenced = [0, 1, 2, 3]
    was = np.asarray(norm(jax.device_put(before[referenced]), norm_type))
    assert np.any(was > 0.9), "the test needs a row to rescale"
    want = was * np.where(was > 0.9, 0.9 / (was + 1e-7), 1.0)  # torch's rule, written out
    np.testing.assert_allclose(np.asarray(norm(jax.device_put(after[referenced]), norm_type)), want, rtol=1e-12)
    _compare(torch_module, module, np.array([4, 0, 4]), steps=1)


def test_embedding_max_norm_inside_jit_writes_the_param(x64):
    torch_module, module = _embedding_pair(4, 3, max_norm=0.5)
    module.load_state_dict({"weight": torch_module.weight.detach().numpy()})
    idx = np.array([0, 3])
    torch_module(torch.from_numpy(idx))

    @nnx.jit
    def forward(m, x):
        return m(x)

    forward(module, jax.device_put(idx))
    _close(module.weight[...], torch_module.weight.detach().numpy(), "weight after a jitted forward")


def test_embedding_from_pretrained_freezes_and_copies(x64):
    pretrained = _normal(4, 3)
    torch_module = torch.nn.Embedding.from_pretrained(torch.from_numpy(pretrained.copy()), padding_idx=2)
    module = nn.Embedding.from_pretrained(jax.device_put(pretrained), padding_idx=2)
    _compare(torch_module, module, np.array([0, 2, 3]))  # no gradient to the frozen weight: torch None, here zeros
    assert [k for k, _ in module.named_parameters()] == ["weight"]
    unfrozen = nn.Embedding.from_pretrained(jax.device_put(pretrained), freeze=False)
    grad = nnx.grad(lambda m: jnp.sum(m(jnp.asarray([1, 1]))))(unfrozen)
    assert np.array_equal(np.asarray(grad["weight"][...])[1], [2, 2, 2])


def test_embedding_refusals_and_out_of_range_under_jit(x64):
    module = nn.Embedding(4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="integer indices"):
        module(jnp.asarray([1.0]))
    with pytest.raises(IndexError, match="index out of range in self: embedding got index 4"):
        module(jnp.asarray([0, 4]))
    with pytest.raises(IndexError, match="got index -1"):
        module(jnp.asarray([-1]))
    with pytest.raises(ValueError, match="Padding_idx must be within num_embeddings"):
        nn.Embedding(4, 3, padding_idx=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="Padding_idx must be within num_embeddings"):
        nn.Embedding(4, 3, padding_idx=-5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="Shape of weight does not match"):
        nn.Embedding(4, 3, _weight=jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="pass rngs"):
        nn.Embedding(4, 3)
    out = jax.jit(lambda w, i: nn.functional.embedding(i, w))(jnp.ones((4, 3)), jnp.asarray([1, 4, -1]))
    assert np.array_equal(np.isnan(np.asarray(out)).all(axis=1), [False, True, True])


def _bag_pair(*args, **kwargs):
    torch_module = torch.nn.EmbeddingBag(*args, **kwargs).double()
    with torch.no_grad():
        torch_module.weight.copy_(torch.from_numpy(_normal(*torch_module.weight.shape, seed=3)))
    return torch_module, nn.EmbeddingBag(*args, **kwargs, rngs=nnx.Rngs(0)).double()


BAG_INPUT = np.array([0, 2, 5, 2, 1, 1, 4, 3, 5])


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 1, -1], ids=lambda p: f"pad{p}")
@pytest.mark.parametrize(
    "offsets, include_last_offset",
    [((0, 3, 3, 7), False), ((0, 2, 9), False), ((0, 4, 4, 9), True), ((0, 9), True), ((0,), False)],
    ids=["empty_bag", "two", "last_offset", "all_last", "one"],
)
def test_embedding_bag_modes_offsets_and_padding(x64, mode, padding_idx, offsets, include_last_offset):
    torch_module, module = _bag_pair(6, 3, mode=mode, padding_idx=padding_idx, include_last_offset=include_last_offset)
    _compare(torch_module, module, BAG_INPUT, np.array(offsets))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_two_dimensional_input_with_max_norm(x64, mode):
    torch_module, module = _bag_pair(6, 3, mode=mode, max_norm=1.1, padding_idx=0)
    _compare(torch_module, module, BAG_INPUT[:8].reshape(2, 4), steps=2)


def test_embedding_bag_per_sample_weights(x64):
    torch_module, module = _bag_pair(6, 3, mode="sum", padding_idx=2)
    _compare(torch_module, module, BAG_INPUT, np.array([0, 4, 6]), _normal(9, seed=5))


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_frequency_scaling_is_embeddings_not_torch_cpu_bug(x64, mode):
    # Every index once: torch's CPU kernel divides by the right count (1), so the two agree.
    torch_module, module = _bag_pair(6, 3, mode=mode, scale_grad_by_freq=True)
    _compare(torch_module, module, np.array([4, 0, 2, 5, 1, 3]), np.array([0, 2, 5]))
    # Mixed counts: the reference is the documented rule, computed by torch's own F.embedding (whose kernel gets it
    # right) and summed or averaged per bag; torch 2.13's embedding_bag divides by another index's count here
    # (pytorch#190063), which the last assertion records so that a torch fix shows up.
    indices, offsets, bag = BAG_INPUT, np.array([0, 4, 6]), np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    weight = torch.from_numpy(_normal(6, 3, seed=3)).requires_grad_(True)
    rows = torch.nn.functional.embedding(torch.from_numpy(indices), weight, scale_grad_by_freq=True)
    sizes = torch.from_numpy(np.bincount(bag).astype(np.float64))[:, None]
    ref = torch.zeros(3, 3, dtype=torch.float64).index_add(0, torch.from_numpy(bag), rows)
    ref = ref / sizes if mode == "mean" else ref
    cot = torch.from_numpy(_normal(3, 3, seed=9))
    (ref * cot).sum().backward()
    bag_weight = weight.detach().clone().requires_grad_(True)
    out = torch.nn.functional.embedding_bag(
        torch.from_numpy(indices), bag_weight, torch.from_numpy(offsets), mode=mode, scale_grad_by_freq=True
    )
    (out * cot).sum().backward()
    grad = jax.grad(
        lambda w: jnp.sum(
            nn.functional.embedding_bag(
                jax.device_put(indices), w, jax.device_put(offsets), mode=mode, scale_grad_by_freq=True
            )
            * cot.numpy()
        )
    )(jax.device_put(weight.detach().numpy()))
    _close(out.detach().numpy(), ref.detach().numpy(), "torch's embedding_bag output against the reference")
    _close(grad, weight.grad.numpy(), "gradient against F.embedding's frequency scaling")
    assert not np.allclose(bag_weight.grad.numpy(), weight.grad.numpy()), "torch's CPU embedding_bag was fixed"


def test_embedding_bag_max_ties_send_the_gradient_to_the_first_maximum(x64):
    torch_module = torch.nn.EmbeddingBag(4, 2, mode="max").double()
    module = nn.EmbeddingBag(4, 2, mode="max", rngs=nnx.Rngs(0)).double()
    with torch.no_grad():
        torch_module.weight.copy_(torch.tensor([[1.0, 2.0], [1.0, 5.0], [3.0, 2.0], [0.0, 0.0]]))
    _compare(torch_module, module, np.array([0, 1, 2, 0, 1, 3, 2]), np.array([0, 2, 5]))


def test_embedding_bag_refusals():
    module = nn.EmbeddingBag(6, 3, mode="sum", rngs=nnx.Rngs(0))
    bad = [
        ((jax.device_put(BAG_INPUT), jnp.asarray([1, 3])), ValueError, "offsets\\[0\\] has to be 0"),
        ((jax.device_put(BAG_INPUT), jnp.asarray([0, 10])), ValueError, "can not be greater than input's length 9"),
        ((jax.device_put(BAG_INPUT), jnp.asarray([0, 5, 3])), ValueError, "offsets must not decrease"),
        ((jax.device_put(BAG_INPUT),), ValueError, "offsets has to be a 1D Tensor but got None"),
        ((jax.device_put(BAG_INPUT).reshape(3, 3), jnp.asarray([0])), ValueError, "offsets has to be None"),
        ((jnp.asarray([0, 6]), jnp.asarray([0])), IndexError, "got index 6"),
        ((jax.device_put(BAG_INPUT), jnp.asarray([0]), jnp.ones(3)), ValueError, "per_sample_weights"),
    ]
    for args, error, message in bad:
        with pytest.raises(error, match=message):
            module(*args)
    with pytest.raises(ValueError, match=r"offsets\[-1\] == len\(input\) \(CSR format\); got offsets\[-1\] = 8"):
        nn.EmbeddingBag(6, 3, include_last_offset=True, rngs=nnx.Rngs(0))(
            jax.device_put(BAG_INPUT), jnp.asarray([0, 8])
        )
    with pytest.raises(NotImplementedError, match="only supported for mode='sum'"):
        nn.EmbeddingBag(6, 3, rngs=nnx.Rngs(0))(jnp.asarray([0, 1]), jnp.asarray([0]), jnp.ones(2))
    with pytest.raises(ValueError, match="max mode does not support scaling"):
        nn.EmbeddingBag(6, 3, mode="max", scale_grad_by_freq=True, rngs=nnx.Rngs(0))(jnp.asarray([[0, 1]]))
    with pytest.raises(ValueError, match="mode has to be one of sum, mean or max"):
        nn.EmbeddingBag(6, 3, mode="median", rngs=nnx.Rngs(0))


# Losses ----------------------------------------------------------------------


def _loss_pair(name, *args, **kwargs):
    """torch's loss and its mirror from the same arguments (arrays given as NumPy, converted per side)."""
    conv_t = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    conv_j = {k: jax.device_put(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    return getattr(torch.nn, name)(*args, **conv_t), getattr(nn, name)(*args, **conv_j)


def _targets(*shape, classes, seed=1, ignore=None):
    t = np.random.default_rng(seed).integers(0, classes, size=shape)
    if ignore is not None:
        t.flat[:: max(1, t.size // 3)] = ignore  # a third of the positions ignored
    return t


# make test runs each loss grid with reduction="mean"; "sum" and "none" (the same formula, reduced otherwise) run in
# make test-all, which CI runs, so that this file stays under half a minute of make test.
REDUCTIONS = ["mean", pytest.param("sum", marks=pytest.mark.slow), pytest.param("none", marks=pytest.mark.slow)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2, 1.0], ids=["ls0", "ls0.2", "ls1"])
@pytest.mark.parametrize("ignore_index", [-100, 1, -3], ids=["noignore", "ignore1", "ignore-3"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 2, 3), (3,)], ids=["2d", "3d", "4d", "unbatched"])
def test_cross_entropy_weight_ignore_index_and_label_smoothing_together(
    x64, reduction, label_smoothing, ignore_index, shape
):
    weight = np.array([0.3, 1.7, 0.9])
    t_shape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    target = _targets(*t_shape, classes=3, ignore=ignore_index)
    if not t_shape:
        target = np.array(ignore_index if ignore_index == 1 else 2)
    kwargs = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    _compare(*_loss_pair("CrossEntropyLoss", **kwargs), 2 * _normal(*shape), target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3], ids=["ls0", "ls0.3"])
def test_cross_entropy_probability_targets(x64, reduction, weighted, label_smoothing):
    kwargs = dict(reduction=reduction, label_smoothing=label_smoothing)
    if weighted:
        kwargs["weight"] = np.array([0.3, 1.7, 0.9, 1.1])
    probs = np.random.default_rng(2).dirichlet(np.ones(4), size=(2, 3)).transpose(0, 2, 1)  # (N, C, d)
    _compare(*_loss_pair("CrossEntropyLoss", **kwargs), _normal(2, 4, 3), probs)


def test_cross_entropy_all_ignored_is_nan_and_weighted_mean_divides_by_the_weights(x64):
    ce = nn.CrossEntropyLoss(ignore_index=0)
    assert np.isnan(float(ce(jnp.ones((2, 3)), jnp.asarray([0, 0]))))
    assert np.isnan(float(torch.nn.CrossEntropyLoss(ignore_index=0)(torch.ones(2, 3), torch.tensor([0, 0]))))
    # The weighted mean is sum(w[t] * nll) / sum(w[t]), not / N: with targets (0, 2) and weights (1, _, 3) the
    # per-sample losses l0, l1 give (l0 + 3 l1) / 4.
    x = jax.device_put(_normal(2, 3))
    per_sample = nn.functional.cross_entropy(x, jnp.asarray([0, 2]), reduction="none")
    weighted = nn.functional.cross_entropy(x, jnp.asarray([0, 2]), weight=jnp.asarray([1.0, 5.0, 3.0]))
    np.testing.assert_allclose(float(weighted), float(per_sample[0] + 3 * per_sample[1]) / 4, rtol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5, 4), (2, 4, 3), (2, 4, 2, 2, 2), (4,)], ids=["2d", "3d", "5d", "unbatched"])
def test_nll_loss_with_weight_and_ignore_index(x64, reduction, shape):
    t_shape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    target = _targets(*t_shape, classes=4, ignore=2) if t_shape else np.array(3)
    kwargs = dict(weight=np.array([0.5, 2.0, 1.0, 0.25]), ignore_index=2, reduction=reduction)
    logp = _normal(*shape)  # nll_loss takes any scores; log-probabilities are not required
    _compare(*_loss_pair("NLLLoss", **kwargs), logp, target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, "row", "full"])
def test_bce_weight_broadcast_and_torchs_gradient_at_0_and_1(x64, reduction, weight):
    p = np.array([[0.0, 0.3, 1.0, 0.999999], [1e-300, 0.5, 0.7, 1.0]])
    y = np.array([[0.2, 1.0, 0.6, 0.0], [1.0, 0.5, 0.0, 0.9]])
    kwargs = dict(reduction=reduction)
    if weight == "row":
        kwargs["weight"] = np.array([0.5, 1.0, 2.0, 1.5])
    elif weight == "full":
        kwargs["weight"] = _normal(2, 4) ** 2
    # The target's gradient is -logit(p), infinite at 0 and 1: compare it where p is inside (0, 1).
    _compare(*_loss_pair("BCELoss", **kwargs), p, y, no_grad=(1,))
    inner = np.array([[0.2, 0.3], [0.6, 0.9]])
    _compare(*_loss_pair("BCELoss", reduction=reduction), inner, inner[::-1].copy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight, pos_weight", [(None, True), (True, None), (True, True)], ids=["pw", "w", "w_pw"])
def test_bce_with_logits_weight_and_pos_weight(x64, reduction, weight, pos_weight):
    kwargs = dict(reduction=reduction)
    if weight:
        kwargs["weight"] = np.array([0.5, 1.0, 2.0])
    if pos_weight:
        kwargs["pos_weight"] = np.array([3.0, 0.5, 1.0])
    logits = np.concatenate([3 * _normal(4, 3), [[40.0, -40.0, 0.0]]])
    _compare(*_loss_pair("BCEWithLogitsLoss", **kwargs), logits, np.random.default_rng(4).uniform(size=(5, 3)))


# Inputs placed exactly on each loss's kink: torch's clamp_min passes the gradient there, its C++ kernels' `z > 0`
# does not, and abs / sgn give 0 at 0; a JAX expression written the other way gets a different gradient.
KINKS = [
    ("L1Loss", {}, [np.array([1.0, 2.0, -0.5]), np.array([1.0, 3.0, -0.5])]),
    ("MSELoss", {}, [np.array([1.0, 2.0]), np.array([1.0, 3.0])]),
    ("SmoothL1Loss", dict(beta=0.5), [np.array([1.5, 0.5, 1.0, 0.2]), np.array([1.0, 1.0, 1.0, 0.0])]),
    ("SmoothL1Loss", dict(beta=0.0), [np.array([1.0, 2.0, -1.0]), np.array([1.0, 1.0, 0.0])]),
    ("HuberLoss", dict(delta=0.5), [np.array([1.5, 0.5, 1.0, 3.0]), np.array([1.0, 1.0, 1.0, 0.0])]),
    ("HingeEmbeddingLoss", dict(margin=1.0), [np.array([1.0, 0.5, 2.0, 0.3]), np.array([-1.0, -1.0, -1.0, 1.0])]),
    ("SoftMarginLoss", {}, [np.array([0.2, -0.6, 0.0]), np.array([1.0, -1.0, 1.0])]),
    (
        "MarginRankingLoss",
        dict(margin=0.5),
        [np.array([2.0, 1.0, 0.0]), np.array([1.5, 1.5, 0.0]), np.array([1.0, -1.0, 1.0])],
    ),
    (
        "CosineEmbeddingLoss",
        dict(margin=0.0),
        [np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 1.0], [2.0, 2.0]]), np.array([-1.0, 1.0])],
    ),
    ("MultiMarginLoss", {}, [np.array([[1.0, 0.0, 0.5], [0.2, 0.2, 0.2]]), np.array([0, 1])]),
    ("MultiMarginLoss", dict(p=2, margin=0.5), [np.array([[1.0, 0.5, 0.7]]), np.array([0])]),
    ("MultiLabelMarginLoss", {}, [np.array([[1.0, 0.0, 0.5, 2.0]]), np.array([[0, -1, 1, 2]])]),
    (
        "TripletMarginLoss",
        dict(margin=1.0, eps=0.0),
        [np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [1.0, 3.0]])],
    ),
]


@pytest.mark.parametrize("name, kwargs, inputs", KINKS, ids=[f"{k[0]}-{i}" for i, k in enumerate(KINKS)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_at_their_kinks_take_torchs_gradient(x64, name, kwargs, inputs, reduction):
    torch_loss, loss = _loss_pair(name, reduction=reduction, **kwargs)
    # torch refuses gradients for some targets (soft margin, hinge, margin ranking and cosine's labels).
    no_grad = {"SoftMarginLoss": (1,), "HingeEmbeddingLoss": (1,), "MarginRankingLoss": (2,)}.get(name, ())
    no_grad = (2,) if name == "CosineEmbeddingLoss" else no_grad
    _compare(torch_loss, loss, *inputs, no_grad=no_grad)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 1.5, float("inf")], ids=lambda p: f"p{p}")
@pytest.mark.parametrize("swap", [False, True], ids=["noswap", "swap"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_triplet_margin_loss_norms_and_swap(x64, p, swap, reduction, batched):
    shape = (6, 4) if batched else (4,)
    torch_loss, loss = _loss_pair("TripletMarginLoss", margin=1.5, p=p, swap=swap, reduction=reduction)
    _compare(torch_loss, loss, _normal(*shape, seed=1), _normal(*shape, seed=2), _normal(*shape, seed=3))


@pytest.mark.parametrize("p", [0.5, 1.0, 1.5, 2.0, 3.0, float("inf"), 0.0], ids=lambda p: f"p{p}")
def test_vector_norm_takes_torchs_gradient_including_zero_rows_and_ties(x64, p):
    x = np.array([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0], [2.0, -2.0, 1.0], [0.5, 0.0, -1.5]])
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    cot = _normal(4, seed=7)
    norm_t = torch.linalg.vector_norm(xt, p, dim=-1)
    (norm_t * torch.from_numpy(cot)).sum().backward()
    norm, vjp = jax.vjp(lambda v: nn.functional.vector_norm(v, p, -1), jax.device_put(x))
    _close(norm, norm_t.detach().numpy(), "norm")
    want = np.zeros_like(x) if xt.grad is None else xt.grad.numpy()  # p=0 counts: torch gives no gradient
    _close(vjp(jax.device_put(cot))[0], want, "gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True], ids=["prob", "log"])
def test_kl_div_log_target_and_batchmean(x64, reduction, log_target):
    logp = np.log(np.random.default_rng(5).dirichlet(np.ones(4), size=3))
    q = np.random.default_rng(6).dirichlet(np.ones(4), size=3)
    q[0, 1] = 0.0  # a zero probability: 0 loss there, and torch's NaN target gradient (xlogy's rule)
    target = np.log(q + 1e-3) if log_target else q
    torch_loss, loss = _loss_pair("KLDivLoss", reduction=reduction, log_target=log_target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's warning about reduction="mean"
        if log_target:
            _compare(torch_loss, loss, logp, target)
        else:  # the target's gradient is NaN at the zero on both sides; compare the rest through the input
            _compare(torch_loss, loss, logp, target, no_grad=(1,))
            g = jax.grad(lambda t: jnp.sum(nn.functional.kl_div(jax.device_put(logp), t, reduction="sum")))(
                jax.device_put(target)
            )
            assert np.isnan(np.asarray(g)[0, 1]) and not np.isnan(np.delete(np.asarray(g), 1)).any()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("log_input, full", [(True, False), (True, True), (False, True)])
def test_poisson_nll_loss_full_with_targets_at_and_below_one(x64, reduction, log_input, full):
    target = np.array([[0.0, 0.5, 1.0, 2.0], [3.0, 7.5, 1.0, 0.2]])
    x = np.abs(_normal(2, 4)) + 0.1
    torch_loss, loss = _loss_pair("PoissonNLLLoss", log_input=log_input, full=full, reduction=reduction)
    _compare(torch_loss, loss, x, target, no_grad=(1,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "var_shape", [(4, 3), (4,), (4, 1), (1, 3)], ids=["full", "last_dim_dropped", "one_per_row", "one_per_col"]
)
@pytest.mark.parametrize("full", [False, True], ids=["nofull", "full"])
def test_gaussian_nll_loss_variance_shapes_and_clamp(x64, reduction, var_shape, full):
    var = np.abs(_normal(*var_shape, seed=3))
    var.flat[0] = 1e-9  # below eps: the value is clamped, the gradient is not
    torch_loss, loss = _loss_pair("GaussianNLLLoss", full=full, reduction=reduction)
    _compare(torch_loss, loss, _normal(4, 3), _normal(4, 3, seed=1), var)


def test_gaussian_nll_loss_float_variance_and_refusals(x64):
    x, y = jax.device_put(_normal(4, 3)), jax.device_put(_normal(4, 3, seed=1))
    want = torch.nn.functional.gaussian_nll_loss(torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y)), 0.5)
    _close(nn.functional.gaussian_nll_loss(x, y, 0.5), want.numpy(), "float var")
    with pytest.raises(ValueError, match="var has negative entry"):
        nn.GaussianNLLLoss()(x, y, -jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="var is of incorrect size"):
        nn.GaussianNLLLoss()(x, y, jnp.ones((4, 2)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_and_multilabel_losses_beyond_the_database(x64, reduction):
    x = _normal(4, 5)
    weight = np.array([0.5, 1.0, 2.0, 1.5, 0.1])
    torch_loss, loss = _loss_pair("MultiMarginLoss", p=2, margin=0.7, weight=weight, reduction=reduction)
    _compare(torch_loss, loss, x, np.array([0, 4, 2, 4]))
    _compare(*_loss_pair("MultiMarginLoss", reduction=reduction), x[0], np.array(3))  # unbatched
    # Duplicated targets count twice; everything after the first -1 is ignored, -1 first means no target.
    labels = np.array([[3, 1, -1, 0, 2], [4, 4, 0, -1, -1], [-1, 2, 2, 2, 2], [0, 1, 2, 3, 4]])
    _compare(*_loss_pair("MultiLabelMarginLoss", reduction=reduction), x, labels)
    _compare(*_loss_pair("MultiLabelSoftMarginLoss", weight=weight, reduction=reduction), x, (labels > 1) * 1.0)


def test_legacy_size_average_and_reduce_override_reduction(x64):
    x, y = _normal(3, 2), _normal(3, 2, seed=1)
    for size_average, reduce in [(False, None), (None, False), (True, True), (False, True)]:
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            loss = nn.MSELoss(size_average, reduce)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch_loss = torch.nn.MSELoss(size_average, reduce)
        assert loss.reduction == torch_loss.reduction
        _compare(torch_loss, loss, x, y)


def test_loss_weights_are_buffers_in_torchs_state_dict(x64):
    weight, pos_weight = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.5, 2.0])
    for name, kwargs in [
        ("CrossEntropyLoss", dict(weight=weight)),
        ("NLLLoss", dict(weight=weight)),
        ("BCEWithLogitsLoss", dict(weight=weight, pos_weight=pos_weight)),
        ("BCEWithLogitsLoss", dict(pos_weight=pos_weight)),
        ("MultiMarginLoss", dict(weight=weight)),
        ("CrossEntropyLoss", {}),
    ]:
        torch_loss, loss = _loss_pair(name, **kwargs)
        assert list(loss.state_dict()) == list(torch_loss.state_dict()), name
        assert [k for k, _ in loss.named_buffers()] == [k for k, _ in torch_loss.named_buffers()], name
        assert not list(loss.named_parameters())


def test_loss_refusals():
    x = jnp.ones((2, 3))
    cases = [
        (lambda: nn.CrossEntropyLoss()(x, jnp.asarray([0, 3])), IndexError, "Target 3 is out of bounds"),
        (lambda: nn.CrossEntropyLoss()(x, jnp.asarray([0.0, 1.0])), TypeError, "integer class indices"),
        (lambda: nn.CrossEntropyLoss(ignore_index=1)(x, x), ValueError, "ignore_index is not supported"),
        (lambda: nn.CrossEntropyLoss()(x, jnp.ones((2, 3), int)), TypeError, "Expected floating point type"),
        (lambda: nn.CrossEntropyLoss()(jnp.ones((2, 3, 4)), jnp.ones((2, 5), int)), ValueError, "target size"),
        (lambda: nn.CrossEntropyLoss()(x, jnp.asarray([0, 1], int).astype(float)), TypeError, "integer class"),
        (lambda: nn.CrossEntropyLoss(label_smoothing=1.5)(x, jnp.asarray([0, 1])), ValueError, "label_smoothing"),
        (lambda: nn.CrossEntropyLoss()(x.astype(int), jnp.asarray([0, 1])), TypeError, "floating-point"),
        (lambda: nn.NLLLoss()(x, jnp.asarray([0, 1, 2])), ValueError, r"batch_size \(2\) to match target batch_size"),
        (lambda: nn.NLLLoss(weight=jnp.ones(4))(x, jnp.asarray([0, 1])), ValueError, "for all 3 classes"),
        (lambda: nn.NLLLoss()(jnp.ones(3), jnp.asarray([0, 1])), ValueError, "1D target must have size 1"),
        (lambda: nn.BCELoss()(jnp.asarray([1.5]), jnp.asarray([1.0])), ValueError, "between 0 and 1"),
        (lambda: nn.BCELoss()(jnp.ones(2) / 2, jnp.ones(3)), ValueError, "different to the input size"),
        (lambda: nn.BCEWithLogitsLoss()(jnp.ones(2), jnp.ones(3)), ValueError, "must be the same as input size"),
        (lambda: nn.MSELoss(reduction="avg")(x, x), ValueError, "avg is not a valid value for reduction"),
        (lambda: nn.KLDivLoss(reduction="batchmeans")(x, x), ValueError, "batchmeans is not a valid value"),
        (lambda: nn.L1Loss(reduction="batchmean")(x, x), ValueError, "batchmean is not a valid value"),
        (lambda: nn.SmoothL1Loss(beta=-1)(x, x), ValueError, "negative values for beta"),
        (lambda: nn.HuberLoss(delta=0)(x, x), ValueError, "non-positive values for delta"),
        (lambda: nn.HuberLoss(delta="1"), TypeError, "delta must be a float or int"),
        (lambda: nn.MultiMarginLoss(p=3), ValueError, "only p == 1 and p == 2"),
        (lambda: nn.MultiMarginLoss()(x, jnp.asarray([0, 3])), IndexError, "target out of range"),
        (lambda: nn.MultiMarginLoss()(x, jnp.asarray([0, 1, 2])), ValueError, "Expected target size"),
        (lambda: nn.MultiLabelMarginLoss()(x, jnp.ones((2, 4), int)), ValueError, "inconsistent target size"),
        (lambda: nn.MultiLabelMarginLoss()(x, jnp.full((2, 3), 3)), IndexError, "out of range"),
        (lambda: nn.TripletMarginLoss(margin=0), ValueError, "expected margin to be greater than 0"),
        (lambda: nn.TripletMarginLoss()(x, x, jnp.ones(3)), ValueError, "same number of dimensions"),
        (lambda: nn.CosineEmbeddingLoss()(x, x, jnp.ones((2, 1))), ValueError, "0D or 1D target tensor expected"),
        (lambda: nn.CosineEmbeddingLoss()(jnp.ones(3), jnp.ones(3), jnp.ones(2)), ValueError, "expects 2D input"),
        (lambda: nn.MarginRankingLoss()(jnp.ones(2), jnp.ones((2, 1)), jnp.ones(2)), ValueError, "same dimension"),
        (lambda: nn.MSELoss()(x, jnp.ones((2, 4))), ValueError, "do not broadcast"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the size-mismatch warning that precedes the broadcast error
                call()


def test_mse_warns_on_a_broadcast_target_as_torch():
    with pytest.warns(UserWarning, match="different to the input size"):
        nn.MSELoss()(jnp.ones((2, 3)), jnp.ones((3,)))


def test_out_of_range_targets_under_jit_give_nan(x64):
    loss = jax.jit(lambda x, t: nn.functional.cross_entropy(x, t, reduction="none"))(
        jnp.ones((3, 4)), jnp.asarray([0, 4, -1])
    )
    assert np.array_equal(np.isnan(np.asarray(loss)), [False, True, True])


def test_linear_cross_entropy_loss_state_dict_and_refusals(x64):
    torch_loss = torch.nn.LinearCrossEntropyLoss(5, 3, out_features=(2,), bias=True, weight=torch.ones(3))
    loss = nn.LinearCrossEntropyLoss(5, 3, out_features=(2,), bias=True, weight=jnp.ones(3), rngs=nnx.Rngs(0))
    assert [(k, tuple(v.shape)) for k, v in loss.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in torch_loss.state_dict().items()
    ]
    _compare(torch_loss.double(), loss.double(), _normal(4, 5), np.array([[0, 2], [1, 1], [2, 0], [0, 0]]))
    with pytest.raises(ValueError, match=r"expected weight shape to be \(3,\)"):
        nn.LinearCrossEntropyLoss(5, 3, weight=jnp.ones(4), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="requires batched input"):
        loss(jnp.ones(5), jnp.zeros(2, int))
    with pytest.raises(ValueError, match="ignore_index cannot be specified when target contains probabilities"):
        nn.LinearCrossEntropyLoss(5, 3, ignore_index=0, rngs=nnx.Rngs(0))(jnp.ones((2, 5)), jnp.ones((2, 3)) / 3)


# CTC ---------------------------------------------------------------------------


def _log_probs(t, n, c, seed=0):
    x = _normal(t, n, c, seed=seed)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("zero_infinity", [False, True], ids=["inf", "zero_inf"])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_ctc_loss_lengths_repeats_empty_targets_and_impossible_alignments(x64, reduction, zero_infinity, layout):
    # Samples: full length; shorter input with repeated labels (needs a blank between the repeats); an empty target;
    # an impossible one (4 labels with a repeat need 5 steps, 4 given): inf loss and NaN gradient unless zero_infinity.
    targets = np.array([[1, 2, 3, 0], [2, 2, 1, 0], [0, 0, 0, 0], [3, 1, 1, 2]])
    input_lengths, target_lengths = np.array([9, 6, 4, 4]), np.array([3, 3, 0, 4])
    if layout == "concatenated":
        targets = np.concatenate([row[:k] for row, k in zip(targets, target_lengths, strict=True)])
    torch_loss, loss = _loss_pair("CTCLoss", blank=0, reduction=reduction, zero_infinity=zero_infinity)
    lp = _log_probs(9, 4, 4)
    if zero_infinity:
        _compare(torch_loss, loss, lp, targets, input_lengths, target_lengths)
        return
    # An infinite loss: torch's gradient is NaN in the impossible sample's steps, and so is the mirror's.
    args = [jax.device_put(a) for a in (targets, input_lengths, target_lengths)]
    out, vjp = jax.vjp(lambda x: loss(x, *args), jax.device_put(lp))
    lpt = torch.from_numpy(lp.copy()).requires_grad_(True)
    out_t = torch_loss(lpt, *[torch.from_numpy(a) for a in (targets, input_lengths, target_lengths)])
    out_t.backward(torch.ones_like(out_t))
    finite = np.isfinite(out_t.detach().numpy())
    assert not finite.all() and np.array_equal(np.isfinite(np.asarray(out)), finite)
    _close(np.asarray(out)[finite], out_t.detach().numpy()[finite], "finite losses")
    g, want = np.asarray(vjp(jnp.ones_like(out))[0]), lpt.grad.numpy()
    np.testing.assert_array_equal(np.isnan(g), np.isnan(want))
    _close(g[~np.isnan(want)], want[~np.isnan(want)], "gradient where finite")


def test_ctc_loss_unbatched_other_blank_and_the_gradient_through_log_softmax(x64):
    torch_loss, loss = _loss_pair("CTCLoss", blank=3, reduction="sum")
    _compare(torch_loss, loss, _log_probs(7, 1, 5)[:, 0], np.array([0, 1, 1, 4]), np.array(7), np.array(4))
    # From logits through log_softmax, as torch's documentation asks: the gradient in the logits is torch's too.
    logits = _normal(8, 2, 5, seed=4)
    targets, il, tl = np.array([[1, 2, 1], [4, 4, 0]]), np.array([8, 5]), np.array([3, 2])
    xt = torch.from_numpy(logits.copy()).requires_grad_(True)
    torch.nn.CTCLoss()(xt.log_softmax(2), *[torch.from_numpy(a) for a in (targets, il, tl)]).backward()
    g = jax.grad(lambda x: nn.CTCLoss()(jax.nn.log_softmax(x, 2), jax.device_put(targets), il, tl))(
        jax.device_put(logits)
    )
    _close(g, xt.grad.numpy(), "gradient in the logits")


def test_ctc_loss_under_jit_with_traced_lengths(x64):
    lp, targets = _log_probs(6, 2, 4), np.array([1, 2, 3, 3, 1])
    il, tl = np.array([6, 5]), np.array([3, 2])
    want = torch.nn.functional.ctc_loss(*(torch.from_numpy(a) for a in (lp, targets, il, tl)), reduction="none")
    have = jax.jit(lambda *a: nn.functional.ctc_loss(*a, reduction="none"))(lp, targets, il, tl)
    _close(have, want.numpy(), "jitted with traced lengths (padded to the whole target length)")


def test_ctc_loss_refusals():
    lp = jnp.zeros((5, 2, 4))
    cases = [
        (lambda: nn.CTCLoss(blank=4)(lp, jnp.ones((2, 3), int), (5, 5), (3, 3)), "blank must be in label range"),
        (lambda: nn.CTCLoss()(lp, jnp.ones((2, 3), int), (6, 5), (3, 3)), "input_lengths to have value at most 5"),
        (lambda: nn.CTCLoss()(lp, jnp.ones((2, 3), int), (5, 5), (4, 3)), "size at least 4 at dimension 1"),
        (lambda: nn.CTCLoss()(lp, jnp.ones(5, int), (5, 5), (4, 3)), "1-D targets hold 5 labels"),
        (lambda: nn.CTCLoss()(lp, jnp.ones((2, 3), int), (5,), (3, 3)), "one entry per sample"),
        (lambda: nn.CTCLoss()(jnp.zeros((5, 4)), jnp.ones((2, 3), int), 5, 3), "unbatched log_probs"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError, match="integer targets"):
        nn.CTCLoss()(lp, jnp.ones((2, 3)), (5, 5), (3, 3))


# jit, grad and vmap of every layer ---------------------------------------------

_R = nnx.Rngs(0)
_I = np.array([[0, 3, 1], [2, 2, 4]])
# (id, module factory, inputs, train mode): the inputs are two examples' worth, stacked on a new leading axis, so that
# vmap over that axis can be checked against each example alone.
LAYERS = [
    ("GroupNorm", lambda: nn.GroupNorm(2, 4), [_normal(2, 3, 4, 5)], True),
    ("InstanceNorm1d", lambda: nn.InstanceNorm1d(3, affine=True), [_normal(2, 2, 3, 5)], True),
    ("InstanceNorm2d-eval", lambda: nn.InstanceNorm2d(3, track_running_stats=True), [_normal(2, 3, 4, 4)], False),
    ("InstanceNorm3d", lambda: nn.InstanceNorm3d(2), [_normal(2, 2, 3, 3, 3)], True),
    ("RMSNorm", lambda: nn.RMSNorm([3, 4]), [_normal(2, 5, 3, 4)], True),
    ("LocalResponseNorm", lambda: nn.LocalResponseNorm(3), [_normal(2, 2, 5, 4)], True),
    ("Embedding", lambda: nn.Embedding(5, 3, padding_idx=1, max_norm=1.0, rngs=_R), [np.stack([_I, _I[::-1]])], True),
    (
        "EmbeddingBag",
        lambda: nn.EmbeddingBag(5, 3, mode="max", rngs=_R),
        [np.stack([_I, _I[:, ::-1]])],
        True,
    ),
    (
        "CrossEntropyLoss",
        lambda: nn.CrossEntropyLoss(label_smoothing=0.1),
        [_normal(2, 4, 3), np.array([[0, 2, 1, 1], [2, 0, 0, 1]])],
        True,
    ),
    (
        "NLLLoss",
        lambda: nn.NLLLoss(weight=jnp.ones(3)),
        [_normal(2, 4, 3), np.array([[0, 2, 1, 1], [2, 0, 0, 1]])],
        True,
    ),
    ("BCELoss", lambda: nn.BCELoss(), [np.full((2, 5), 0.3), np.full((2, 5), 0.6)], True),
    ("BCEWithLogitsLoss", lambda: nn.BCEWithLogitsLoss(), [_normal(2, 5), np.full((2, 5), 0.6)], True),
    ("MSELoss", lambda: nn.MSELoss(), [_normal(2, 5), _normal(2, 5, seed=1)], True),
    ("L1Loss", lambda: nn.L1Loss(), [_normal(2, 5), _normal(2, 5, seed=1)], True),
    ("SmoothL1Loss", lambda: nn.SmoothL1Loss(beta=0.5), [_normal(2, 5), _normal(2, 5, seed=1)], True),
    ("HuberLoss", lambda: nn.HuberLoss(delta=0.5), [_normal(2, 5), _normal(2, 5, seed=1)], True),
    ("KLDivLoss", lambda: nn.KLDivLoss(reduction="batchmean"), [_normal(2, 3, 4), np.full((2, 3, 4), 0.25)], True),
    ("SoftMarginLoss", lambda: nn.SoftMarginLoss(), [_normal(2, 5), np.sign(_normal(2, 5, seed=1))], True),
    ("MultiLabelSoftMarginLoss", lambda: nn.MultiLabelSoftMarginLoss(), [_normal(2, 3, 4), np.ones((2, 3, 4))], True),
    ("MultiMarginLoss", lambda: nn.MultiMarginLoss(), [_normal(2, 2, 3), _I[:, :2] % 3], True),
    ("MultiLabelMarginLoss", lambda: nn.MultiLabelMarginLoss(), [_normal(2, 2, 3), np.full((2, 2, 3), -1)], True),
    ("HingeEmbeddingLoss", lambda: nn.HingeEmbeddingLoss(), [_normal(2, 5), np.sign(_normal(2, 5, seed=1))], True),
    (
        "CosineEmbeddingLoss",
        lambda: nn.CosineEmbeddingLoss(),
        [_normal(2, 3, 4), _normal(2, 3, 4, seed=1), np.sign(_normal(2, 3))],
        True,
    ),
    (
        "MarginRankingLoss",
        lambda: nn.MarginRankingLoss(0.1),
        [_normal(2, 5), _normal(2, 5, seed=1), np.sign(_normal(2, 5, seed=2))],
        True,
    ),
    (
        "TripletMarginLoss",
        lambda: nn.TripletMarginLoss(swap=True),
        [_normal(2, 3, 4), _normal(2, 3, 4, seed=1), _normal(2, 3, 4, seed=2)],
        True,
    ),
    ("PoissonNLLLoss", lambda: nn.PoissonNLLLoss(full=True), [_normal(2, 5), np.full((2, 5), 2.0)], True),
    ("GaussianNLLLoss", lambda: nn.GaussianNLLLoss(), [_normal(2, 4), _normal(2, 4, seed=1), np.ones((2, 4))], True),
    (
        "LinearCrossEntropyLoss",
        lambda: nn.LinearCrossEntropyLoss(5, 3, bias=True, label_smoothing=0.1, rngs=_R),
        [_normal(2, 4, 5), np.array([[0, 2, 1, 1], [2, 0, 0, 1]])],
        True,
    ),
    (
        "CTCLoss",
        lambda: nn.CTCLoss(),
        [
            np.stack([_log_probs(6, 2, 4), _log_probs(6, 2, 4, seed=1)]),
            np.array([[[1, 2], [3, 3]], [[2, 1], [1, 0]]]),
            np.array([[6, 5], [4, 6]]),
            np.array([[2, 2], [2, 1]]),
        ],
        True,
    ),
]


@pytest.mark.parametrize("make, inputs, training", [p[1:] for p in LAYERS], ids=[p[0] for p in LAYERS])
def test_every_new_layer_jits_differentiates_and_vmaps(x64, make, inputs, training):
    module = make().double().train(training)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    floating = [i for i, x in enumerate(inputs) if np.issubdtype(x.dtype, np.floating)]

    def f(params, *xs):
        return jnp.sum(nnx.merge(graphdef, params, rest, copy=True)(*xs) ** 2)

    grad = jax.grad(f, argnums=(0, *[1 + i for i in floating]))
    axes = (None, *[0] * len(inputs))

    # One compiled program for the single examples, their gradients and both vmaps (separate programs and an
    # eager call compiled five times over; the values themselves are compared with torch by the other tests).
    @jax.jit
    def run(params, *batch):
        singles = [(f(params, *[x[k] for x in batch]), grad(params, *[x[k] for x in batch])) for k in range(2)]
        return singles, jax.vmap(f, in_axes=axes)(params, *batch), jax.vmap(grad, in_axes=axes)(params, *batch)

    singles, mapped, grads = run(params, *[jax.device_put(x) for x in inputs])
    for _, g in singles:
        assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(g)), "a non-finite gradient"
    for k, (value, g) in enumerate(singles):
        # Entries taken in NumPy: indexing a jax array eagerly compiles a slice program per shape.
        _close(np.asarray(mapped)[k], value, f"vmap entry {k}")
        for have, want in zip(jax.tree.leaves(grads), jax.tree.leaves(g), strict=True):
            _close(np.asarray(have)[k], want, f"vmap(grad) entry {k}")


# Generated shapes and options (hypothesis) -------------------------------------

# Derandomized, as test_nn_hypothesis: the same examples on every run and machine.
SETTINGS = settings(
    max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    groups=st.integers(1, 3),
    per_group=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 4), max_size=3),
    batch=st.integers(1, 3),
    affine=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-2]),
)
def test_group_norm_over_generated_shapes(x64, groups, per_group, spatial, batch, affine, eps):
    channels = groups * per_group
    if batch * per_group * int(np.prod(spatial)) == 1:
        return  # torch refuses a single value per group (tested in test_group_norm_refusals)
    torch_module = torch.nn.GroupNorm(groups, channels, eps=eps, affine=affine).double()
    if affine:
        with torch.no_grad():
            torch_module.weight.normal_()
            torch_module.bias.normal_()
    _compare(
        torch_module,
        nn.GroupNorm(groups, channels, eps=eps, affine=affine).double(),
        _normal(batch, channels, *spatial),
    )


@SETTINGS
@given(
    dims=st.integers(1, 3),
    channels=st.integers(1, 3),
    batch=st.integers(0, 3),
    size=st.integers(2, 4),
    affine=st.booleans(),
    track=st.booleans(),
    momentum=st.sampled_from([0.1, 0.5, None]),
    training=st.booleans(),
)
def test_instance_norm_over_generated_shapes_and_options(
    x64, dims, channels, batch, size, affine, track, momentum, training
):
    name = f"InstanceNorm{dims}d"
    kwargs = dict(affine=affine, track_running_stats=track, momentum=momentum)
    torch_module = getattr(torch.nn, name)(channels, **kwargs).double().train(training)
    if track:  # moved statistics, so that eval mode reads something other than zeros and ones
        with torch.no_grad():
            torch_module.running_mean.uniform_(-1, 1)
            torch_module.running_var.uniform_(0.5, 2)
    shape = (batch, channels, *(size,) * dims) if batch else (channels, *(size,) * dims)  # batch 0: unbatched
    _compare(torch_module, getattr(nn, name)(channels, **kwargs).double().train(training), _normal(*shape), steps=2)


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    normalized=st.integers(1, 3),
    affine=st.booleans(),
    eps=st.sampled_from([None, 1e-6, 0.1]),
    scale=st.sampled_from([1e-5, 1.0, 100.0]),
)
def test_rms_norm_over_generated_shapes(x64, shape, normalized, affine, eps, scale):
    normalized_shape = shape[-min(normalized, len(shape)) :]
    torch_module = torch.nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine).double()
    if affine:
        with torch.no_grad():
            torch_module.weight.normal_()
    module = nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine).double()
    _compare(torch_module, module, scale * _normal(*shape))


@SETTINGS
@given(
    size=st.integers(1, 6),
    channels=st.integers(1, 6),
    spatial=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    alpha=st.sampled_from([1e-4, 0.5]),
    beta=st.sampled_from([0.75, 0.3]),
    k=st.sampled_from([1.0, 2.0]),
)
def test_local_response_norm_over_generated_shapes(x64, size, channels, spatial, alpha, beta, k):
    torch_module = torch.nn.LocalResponseNorm(size, alpha, beta, k)
    _compare(torch_module, nn.LocalResponseNorm(size, alpha, beta, k), 3 * _normal(2, channels, *spatial))


@SETTINGS
@given(
    num=st.integers(1, 6),
    dim=st.integers(1, 4),
    index_shape=st.lists(st.integers(1, 4), max_size=3),
    padding=st.one_of(st.none(), st.integers(-6, 5)),
    max_norm=st.sampled_from([None, 0.5, 2.0]),
    norm_type=st.sampled_from([1.0, 2.0, 3.5]),
    scale_grad_by_freq=st.booleans(),
)
def test_embedding_over_generated_shapes_and_options(
    x64, num, dim, index_shape, padding, max_norm, norm_type, scale_grad_by_freq
):
    padding = None if padding is None or not -num <= padding < num else padding
    kwargs = dict(padding_idx=padding, max_norm=max_norm, norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq)
    torch_module, module = _embedding_pair(num, dim, **kwargs)
    indices = np.random.default_rng(num * dim).integers(0, num, size=index_shape)
    _compare(torch_module, module, indices, steps=2)


@SETTINGS
@given(
    batch=st.integers(1, 4),
    classes=st.integers(2, 5),
    spatial=st.lists(st.integers(1, 3), max_size=2),
    weighted=st.booleans(),
    ignore=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.05, 0.5]),
    probabilities=st.booleans(),
)
def test_cross_entropy_over_generated_shapes_and_options(
    x64, batch, classes, spatial, weighted, ignore, label_smoothing, probabilities
):
    kwargs = dict(label_smoothing=label_smoothing)
    if weighted:
        kwargs["weight"] = np.abs(_normal(classes, seed=classes)) + 0.1
    rng = np.random.default_rng(batch * classes)
    if probabilities:
        target = rng.dirichlet(np.ones(classes), size=(batch, *spatial))
        target = np.moveaxis(target, -1, 1)
    else:
        target = rng.integers(0, classes, size=(batch, *spatial))
        if ignore:
            kwargs["ignore_index"] = 0  # some positions of class 0 ignored (maybe all: NaN on both sides)
            target.flat[0] = 1
    torch_loss, loss = _loss_pair("CrossEntropyLoss", **kwargs)
    _compare(torch_loss, loss, 2 * _normal(batch, classes, *spatial), target)
