"""jaxnets.nn against torch.nn over generated shapes and options, in float64: forward, input and weight gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
from budget import examples
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tolerances import F64_ATOL, F64_RTOL

from jaxnets import nn

torch.set_num_threads(1)  # torch and XLA share two cores in this process

# Derandomized: the same examples on every run and machine; each example compiles one program (_run).
SETTINGS = settings(
    max_examples=examples(12),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@jax.jit(static_argnums=0)
def _run(graphdef, params, rest, x, cot):
    """The gradients of sum(output * cot) with respect to the parameters and the input, the output, the state after.

    One compiled program per example: op by op, every primitive of the forward and backward passes compiled
    apart for each example's shapes (227 small programs for the convolution's 6 examples of make test).
    """

    def loss(params, x):
        module = nnx.merge(graphdef, params, rest, copy=True)
        out = module(x)
        return jnp.sum(out * cot), (out, nnx.state(module))

    return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, x)


def _check(torch_module, module, x):
    """Outputs, input gradients and parameter gradients agree to F64_RTOL, for one cotangent.

    Plus F64_ATOL: a normalisation over two values has an input gradient of
    order eps (its outputs are +-1 whatever the input), which both sides
    compute by cancelling O(1) terms, so its relative error measures the cancellation.
    Inputs and cotangents are O(1), so an absolute 1e-12 is still sharp.
    """
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})
    xt = torch.from_numpy(x).requires_grad_(True)
    out_t = torch_module(xt)
    cot = np.random.default_rng(0).normal(size=tuple(out_t.shape))
    (out_t * torch.from_numpy(cot)).sum().backward()

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    (grads, x_grad), (out, state) = _run(graphdef, params, rest, jax.device_put(x), jax.device_put(cot))
    nnx.update(module, state)  # the buffers a train-mode forward pass moves
    pairs = [("output", out, out_t.detach().numpy()), ("input grad", x_grad, xt.grad.numpy())]
    flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(grads)}
    pairs += [(f"{n} grad", flat[n], p.grad.numpy()) for n, p in torch_module.named_parameters()]
    for what, have, want in pairs:
        have = np.asarray(have)
        assert have.shape == want.shape, what
        np.testing.assert_allclose(
            have, want, rtol=0, atol=F64_RTOL * np.max(np.abs(want), initial=0) + F64_ATOL, err_msg=what
        )


@SETTINGS
@given(
    dims=st.integers(1, 3),
    groups=st.integers(1, 3),
    per_group=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    padding=st.one_of(st.integers(0, 2), st.sampled_from(["valid", "same"])),
    padding_mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    bias=st.booleans(),
    size=st.integers(5, 7),
    batch=st.integers(1, 2),
)
def test_conv_matches_torch(
    x64, dims, groups, per_group, kernel, stride, dilation, padding, padding_mode, bias, size, batch
):
    if padding == "same":
        stride = 1  # torch refuses padding="same" with strides
    in_channels, out_channels = groups * per_group[0], groups * per_group[1]
    args = (in_channels, out_channels, kernel)
    kwargs = dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode
    )
    torch_cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[dims]
    jax_cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    torch.manual_seed(0)
    torch_module = torch_cls(*args, **kwargs).double()
    module = jax_cls(*args, **kwargs, rngs=nnx.Rngs(0)).double()
    x = np.random.default_rng(1).normal(size=(batch, in_channels) + (size,) * dims)
    _check(torch_module, module, x)


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    out_features=st.integers(1, 6),
    bias=st.booleans(),
)
def test_linear_matches_torch(x64, shape, out_features, bias):
    torch.manual_seed(0)
    torch_module = torch.nn.Linear(shape[-1], out_features, bias=bias).double()
    module = nn.Linear(shape[-1], out_features, bias=bias, rngs=nnx.Rngs(0)).double()
    _check(torch_module, module, np.random.default_rng(1).normal(size=shape))


@SETTINGS
@given(
    dims=st.integers(0, 3),
    channels=st.integers(1, 4),
    batch=st.integers(2, 4),
    momentum=st.sampled_from([0.1, 0.5, None]),
    affine=st.booleans(),
    track=st.booleans(),
    training=st.booleans(),
)
def test_batch_norm_matches_torch_with_buffers(x64, dims, channels, batch, momentum, affine, track, training):
    cls = {0: "BatchNorm1d", 1: "BatchNorm1d", 2: "BatchNorm2d", 3: "BatchNorm3d"}[dims]
    kwargs = dict(momentum=momentum, affine=affine, track_running_stats=track)
    torch_module = getattr(torch.nn, cls)(channels, **kwargs).double().train(training)
    module = getattr(nn, cls)(channels, **kwargs).double().train(training)
    if track:  # start from moved statistics, so eval mode reads something other than zeros and ones
        torch_module.running_mean.uniform_(-1, 1)
        torch_module.running_var.uniform_(0.5, 2)
    x = np.random.default_rng(1).normal(size=(batch, channels) + (3,) * dims)
    _check(torch_module, module, x)
    for key, value in torch_module.state_dict().items():
        np.testing.assert_allclose(np.asarray(module.state_dict()[key]), value.numpy(), rtol=F64_RTOL, err_msg=key)


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    normalized=st.integers(1, 3),
    affine=st.booleans(),
    bias=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-3]),
)
def test_layer_norm_matches_torch(x64, shape, normalized, affine, bias, eps):
    normalized_shape = shape[-min(normalized, len(shape)) :]
    torch_module = torch.nn.LayerNorm(normalized_shape, eps=eps, elementwise_affine=affine, bias=bias).double()
    module = nn.LayerNorm(normalized_shape, eps=eps, elementwise_affine=affine, bias=bias).double()
    _check(torch_module, module, np.random.default_rng(1).normal(size=shape))
