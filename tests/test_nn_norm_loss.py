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

    ``inputs`` are NumPy arrays; the floating-point ones not listed in
    ``no_grad`` (by position) are differentiated, with one random cotangent per
    output. The jaxnets side runs as a jitted function of its split state, as a
    training step would.
    """
    module.load_state_dict({k: v.detach().numpy().copy() for k, v in torch_module.state_dict().items()})
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    diff = [i for i, x in enumerate(inputs) if np.issubdtype(x.dtype, np.floating) and i not in no_grad]

    def forward(params, rest, xs):
        args = [jnp.asarray(x) for x in inputs]
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
        xt = [torch.from_numpy(x.copy()) for x in inputs]
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
