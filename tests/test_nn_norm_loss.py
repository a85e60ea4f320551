"""jaxnets.nn's normalisation, embedding and loss layers against torch, for what torch's module_db leaves out.

test_nn_module_db runs torch's own database for these classes; the cases here
are the ones it does not reach: running statistics over several steps and
``momentum=None``, float32 and RMSNorm's machine-epsilon rule, channel
windows wider than the input, torch's refusals, and jit / grad / vmap of every
layer. float64 at F64_RTOL (see tolerances.py) unless a test says otherwise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from tolerances import F32_ATOL, F32_RTOL, F64_ATOL, F64_RTOL

from jaxnets import nn

torch.set_num_threads(1)  # torch and XLA share two cores in this process


def _close(have, want, what, rtol=F64_RTOL, atol=F64_ATOL):
    have, want = np.asarray(have), np.asarray(want)
    assert have.shape == want.shape, f"{what}: shape {have.shape}, torch {want.shape}"
    assert have.dtype == want.dtype, f"{what}: dtype {have.dtype}, torch {want.dtype}"
    np.testing.assert_allclose(have, want, rtol=0, atol=rtol * np.max(np.abs(want), initial=0) + atol, err_msg=what)


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
        args = [None if x is None else jnp.asarray(x) for x in inputs]
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
        out, state, (param_grads, input_grads) = step(params, rest, [jnp.asarray(inputs[i]) for i in diff], cot)
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
        grad = jax.grad(lambda w: jnp.sum(nn.functional.embedding(jnp.asarray(indices), w, padding_idx) ** 2))(
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
    was = np.asarray(norm(jnp.asarray(before[referenced]), norm_type))
    assert np.any(was > 0.9), "the test needs a row to rescale"
    want = was * np.where(was > 0.9, 0.9 / (was + 1e-7), 1.0)  # torch's rule, written out
    np.testing.assert_allclose(np.asarray(norm(jnp.asarray(after[referenced]), norm_type)), want, rtol=1e-12)
    _compare(torch_module, module, np.array([4, 0, 4]), steps=1)


def test_embedding_max_norm_inside_jit_writes_the_param(x64):
    torch_module, module = _embedding_pair(4, 3, max_norm=0.5)
    module.load_state_dict({"weight": torch_module.weight.detach().numpy()})
    idx = np.array([0, 3])
    torch_module(torch.from_numpy(idx))

    @nnx.jit
    def forward(m, x):
        return m(x)

    forward(module, jnp.asarray(idx))
    _close(module.weight[...], torch_module.weight.detach().numpy(), "weight after a jitted forward")


def test_embedding_from_pretrained_freezes_and_copies(x64):
    pretrained = _normal(4, 3)
    torch_module = torch.nn.Embedding.from_pretrained(torch.from_numpy(pretrained.copy()), padding_idx=2)
    module = nn.Embedding.from_pretrained(jnp.asarray(pretrained), padding_idx=2)
    _compare(torch_module, module, np.array([0, 2, 3]))  # no gradient to the frozen weight: torch None, here zeros
    assert [k for k, _ in module.named_parameters()] == ["weight"]
    unfrozen = nn.Embedding.from_pretrained(jnp.asarray(pretrained), freeze=False)
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
                jnp.asarray(indices), w, jnp.asarray(offsets), mode=mode, scale_grad_by_freq=True
            )
            * cot.numpy()
        )
    )(jnp.asarray(weight.detach().numpy()))
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
        ((jnp.asarray(BAG_INPUT), jnp.asarray([1, 3])), ValueError, "offsets\\[0\\] has to be 0"),
        ((jnp.asarray(BAG_INPUT), jnp.asarray([0, 10])), ValueError, "can not be greater than input's length 9"),
        ((jnp.asarray(BAG_INPUT), jnp.asarray([0, 5, 3])), ValueError, "offsets must not decrease"),
        ((jnp.asarray(BAG_INPUT),), ValueError, "offsets has to be a 1D Tensor but got None"),
        ((jnp.asarray(BAG_INPUT).reshape(3, 3), jnp.asarray([0])), ValueError, "offsets has to be None"),
        ((jnp.asarray([0, 6]), jnp.asarray([0])), IndexError, "got index 6"),
        ((jnp.asarray(BAG_INPUT), jnp.asarray([0]), jnp.ones(3)), ValueError, "per_sample_weights"),
    ]
    for args, error, message in bad:
        with pytest.raises(error, match=message):
            module(*args)
    with pytest.raises(ValueError, match=r"offsets\[-1\] == len\(input\) \(CSR format\); got offsets\[-1\] = 8"):
        nn.EmbeddingBag(6, 3, include_last_offset=True, rngs=nnx.Rngs(0))(jnp.asarray(BAG_INPUT), jnp.asarray([0, 8]))
    with pytest.raises(NotImplementedError, match="only supported for mode='sum'"):
        nn.EmbeddingBag(6, 3, rngs=nnx.Rngs(0))(jnp.asarray([0, 1]), jnp.asarray([0]), jnp.ones(2))
    with pytest.raises(ValueError, match="max mode does not support scaling"):
        nn.EmbeddingBag(6, 3, mode="max", scale_grad_by_freq=True, rngs=nnx.Rngs(0))(jnp.asarray([[0, 1]]))
    with pytest.raises(ValueError, match="mode has to be one of sum, mean or max"):
        nn.EmbeddingBag(6, 3, mode="median", rngs=nnx.Rngs(0))
