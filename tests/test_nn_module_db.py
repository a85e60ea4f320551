"""jaxnets.nn against torch.nn on torch's own module test database, in float64.

torch tests its modules with ``torch.testing._internal.common_modules.module_db``:
for each class, ``module_inputs_func`` yields constructor arguments and forward
inputs, in eval and train mode. For every class jaxnets.nn has, every one of
those inputs runs here: both modules are built from the same arguments, torch's
``state_dict`` is loaded into the jaxnets module as it is, both run the same
inputs, and the outputs, the input gradients, the parameter gradients and the
buffers afterwards (BatchNorm's running statistics) must agree.

The first :data:`QUICK` inputs of each class and mode run in ``make test``; the
rest are marked ``slow`` and run in ``make test-all`` (which CI runs), since the
whole database takes minutes.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from tolerances import F64_RTOL
from torch.testing._internal import common_modules

from jaxnets import nn

SEED = 0  # seeds torch's generator for the database's inputs, and the cotangents
QUICK = 2


def _cases():
    for info in common_modules.module_db:
        name = info.module_cls.__name__
        if info.is_lazy or not hasattr(nn, name):
            continue
        for training in (False, True) if info.train_and_eval_differ else (False,):
            for index, case in enumerate(_inputs(info, training)):
                mode = "train" if training else "eval"
                marks = () if index < QUICK else pytest.mark.slow
                yield pytest.param(info, training, index, id=f"{name}-{mode}-{index}-{case.desc}", marks=marks)


def _inputs(info, training):
    torch.manual_seed(SEED)  # the database draws its tensors from torch's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=True, training=training)


def _mirror_layer(layer):
    """A jaxnets.nn copy of a torch Transformer layer passed to a constructor (its weights come with the state_dict)."""
    cls = getattr(nn, type(layer).__name__)
    activation = layer.activation
    name = getattr(activation, "__name__", type(activation).__name__).lower()
    return cls(
        layer.self_attn.embed_dim,
        layer.self_attn.num_heads,
        layer.linear1.out_features,
        layer.dropout.p,
        getattr(nn.functional, name),
        layer.norm1.eps,
        layer.self_attn.batch_first,
        layer.norm_first,
        layer.linear1.bias is not None,
        rngs=nnx.Rngs(0),
    )


def _to_jax(value):
    if isinstance(value, torch.nn.Module):
        return _mirror_layer(value)
    if callable(value) and getattr(torch.nn.functional, getattr(value, "__name__", ""), None) is value:
        return getattr(nn.functional, value.__name__)  # torch.nn.functional.gelu -> jaxnets.nn.functional.gelu
    if isinstance(value, torch.Tensor):
        # Copied (never alias torch's memory), and put on the device as it is: jnp.asarray of a NumPy array compiles
        # an identity program for each new shape and dtype (jax 0.10's lax.stage), 96 compilations in this file.
        return jax.device_put(np.array(value.detach().numpy(), copy=True))
    if isinstance(value, torch.dtype):
        return jnp.dtype(str(value).removeprefix("torch."))  # dtype=torch.float64 -> float64
    if isinstance(value, tuple | list):
        return type(value)(_to_jax(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_jax(v) for k, v in value.items()}
    return value


def _leaves(out):
    return [out] if isinstance(out, torch.Tensor | jax.Array) else [x for o in out for x in _leaves(o)]


def _assert_close(have, want, what, floor=0.0):
    """``have`` within ``F64_RTOL`` of torch's ``want``, relative to the larger of ``max|want|`` and ``floor``.

    A gradient is passed the largest cotangent as ``floor``. The gradient of ``sum(out * c)`` is linear in
    ``c`` and its terms are of ``c``'s size before they cancel, so it carries rounding errors of ``c``'s size
    times the float64 epsilon, however small it comes out. ``Tanh`` near saturation (``g * (1 - y**2)`` with
    ``y`` within 2e-6 of 1 loses 5 digits to one ulp of ``y``) and ``MultiheadAttention``'s key gradients
    (softmax gradients summing to zero) differ from torch's by 1.2e-12 of their own largest entry under
    ``make test``'s compile flags, by at most 7.2e-16 of the cotangent's. A real difference (a missing term,
    a wrong sign) still fails, unless the whole gradient is below 1e-12 of the cotangent.
    """
    have, want = np.asarray(have), np.asarray(want)
    assert have.shape == want.shape, f"{what}: shape {have.shape}, torch {want.shape}"
    assert have.dtype == want.dtype, f"{what}: dtype {have.dtype}, torch {want.dtype}"
    # NaN where torch has NaN (LPPool of negative inputs), and only there; the rest compared as numbers.
    nan = np.isnan(want) if np.issubdtype(want.dtype, np.floating) else np.zeros(want.shape, bool)
    assert np.array_equal(np.isnan(have) if np.issubdtype(have.dtype, np.floating) else nan, nan), (
        f"{what}: NaN where torch has none, or not"
    )
    have, want = np.where(nan, 0, have), np.where(nan, 0, want)
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, floor, 1e-300)
    err = float(np.max(np.abs(have - want))) / scale if want.size else 0.0
    assert err <= F64_RTOL, f"{what}: relative error {err:.3g} > {F64_RTOL}"


@pytest.mark.parametrize("info, training, index", list(_cases()))
def test_matches_torch_on_torchs_module_db(x64, info, training, index):
    case = _inputs(info, training)[index]
    c_args, c_kwargs = case.constructor_input.args, case.constructor_input.kwargs
    f_args, f_kwargs = case.forward_input.args, case.forward_input.kwargs
    # Leaves of their own, so that .grad is filled even where the database built an input by a view or an op.
    f_args = tuple(
        a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) and a.requires_grad else a
        for a in f_args
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation warnings (implicit softmax dim...)
        torch_module = info.module_cls(*c_args, **c_kwargs).to(torch.float64).train(training)
        initial_state = {k: v.detach().numpy().copy() for k, v in torch_module.state_dict().items()}
        torch_out = torch_module(*f_args, **f_kwargs)
    module = getattr(nn, info.module_cls.__name__)(*_to_jax(c_args), **_to_jax(c_kwargs), rngs=nnx.Rngs(0))
    module.to(jnp.float64).train(training)
    module.load_state_dict(initial_state)
    jax_args, jax_kwargs = _to_jax(f_args), _to_jax(f_kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_leaves = _leaves(torch_out)
        rng = np.random.default_rng(SEED)
        cotangents = [rng.normal(size=t.shape) for t in torch_leaves]
        differentiable = [i for i, a in enumerate(f_args) if isinstance(a, torch.Tensor) and a.requires_grad]
        if any(t.requires_grad for t in torch_leaves):
            sum((t * torch.from_numpy(c)).sum() for t, c in zip(torch_leaves, cotangents, strict=True)).backward()

    # One compiled program per case (op-by-op dispatch would compile every primitive separately): the forward pass
    # from the module's state, the state it leaves (buffers), and the gradients of sum(output * cotangent).
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def forward(params, rest, xs):
        args = list(jax_args)
        for i, x in zip(differentiable, xs, strict=True):
            args[i] = x
        copy = nnx.merge(graphdef, params, rest, copy=True)
        return copy(*args, **jax_kwargs), nnx.state(copy)

    def loss(params, xs, rest):
        out, state = forward(params, rest, xs)
        return sum((o * c).sum() for o, c in zip(_leaves(out), cotangents, strict=True)), (out, state)

    @jax.jit
    def run(params, rest, xs):
        grads, (out, state) = jax.grad(loss, argnums=(0, 1), has_aux=True)(params, xs, rest)
        return out, state, grads

    out, state, (param_grads, input_grads) = run(params, rest, [jax_args[i] for i in differentiable])
    jax_leaves = _leaves(out)
    assert len(jax_leaves) == len(torch_leaves)
    for i, (have, want) in enumerate(zip(jax_leaves, torch_leaves, strict=True)):
        _assert_close(have, want.detach().numpy(), f"output {i}")
    nnx.update(module, state)
    for key, want in torch_module.state_dict().items():
        _assert_close(module.state_dict()[key], want.numpy(), f"buffer/param {key} after the forward pass")
    cotangent = max((float(np.max(np.abs(c))) for c in cotangents if c.size), default=0.0)
    for i, grad in zip(differentiable, input_grads, strict=True):
        _assert_close(grad, f_args[i].grad.numpy(), f"gradient of input {i}", cotangent)
    flat = {".".join(map(str, path)): value for path, value in nnx.to_flat_state(param_grads)}
    for name, p in torch_module.named_parameters():
        want = np.zeros(p.shape) if p.grad is None else p.grad.numpy()
        have = flat[name]
        _assert_close(have[...] if hasattr(have, "__getitem__") else have, want, f"gradient of {name}", cotangent)


def test_the_gradient_bound_takes_cancellation_and_still_catches_a_wrong_gradient():
    # tanh's gradient near saturation (about 1e-6 of the cotangent), with y one ulp off as another compilation
    # of tanh can give it.
    g, y = np.array([0.6, -0.1]), np.tanh([7.05, -7.9])
    want = g * (1 - y**2)
    have = g * (1 - np.nextafter(y, 2) ** 2)
    with pytest.raises(AssertionError, match="relative error"):
        _assert_close(have, want, "gradient")  # 7e-11 of its own largest entry
    _assert_close(have, want, "gradient", floor=0.6)  # 2e-16 of the cotangent
    for wrong in (g * (1 - y), -want):  # a missing factor (1 + y), a wrong sign
        with pytest.raises(AssertionError, match="relative error"):
            _assert_close(wrong, want, "gradient", floor=0.6)


# torch's fractional max-pools draw random pooling regions, which cannot be matched (#15 leaves them out).
NOT_MIRRORED = {"FractionalMaxPool2d", "FractionalMaxPool3d"}


def test_every_module_db_class_is_mirrored():
    names = {info.module_cls.__name__ for info in common_modules.module_db if not info.is_lazy}
    missing = sorted(names - NOT_MIRRORED - {n for n in names if hasattr(nn, n)})
    assert not missing, f"{len(missing)} torch.nn classes of module_db not in jaxnets.nn: {missing}"


def _first_cases():
    seen = set()
    for param in _cases():
        info, training, index = param.values
        if info.module_cls.__name__ not in seen and not training:
            seen.add(info.module_cls.__name__)
            yield pytest.param(info, id=info.module_cls.__name__)


@pytest.mark.parametrize("info", list(_first_cases()))
def test_every_layer_jits_and_vmaps_in_eval_mode(x64, info):
    case = _inputs(info, False)[0]
    args = _to_jax(case.forward_input.args)
    kwargs = _to_jax(case.forward_input.kwargs)
    module = getattr(nn, info.module_cls.__name__)(
        *_to_jax(case.constructor_input.args), **_to_jax(case.constructor_input.kwargs), rngs=nnx.Rngs(0)
    )
    module.to(jnp.float64).eval()
    graphdef, state = nnx.split(module)

    def forward(state, *xs):
        return nnx.merge(graphdef, state, copy=True)(*xs, **kwargs)

    # vmap over a new leading axis of every floating-point argument: two scaled copies of the inputs, each
    # entry against the single call (the module_db test above checks the jitted call against torch). One
    # compiled program holds the vmap and both single calls: eagerly, the vmap compiled every primitive on its
    # own (13 compilations per layer, 57 s of make test for 106 layers).
    floating = [i for i, a in enumerate(args) if jnp.issubdtype(getattr(a, "dtype", int), jnp.floating)]
    if not floating:
        pytest.skip("no floating-point input to map over")

    def call(state, xs):
        full = list(args)
        for i, x in zip(floating, xs, strict=True):
            full[i] = x
        return forward(state, *full)

    @jax.jit
    def run(state, batched):
        mapped = jax.vmap(call, in_axes=(None, 0))(state, batched)
        return mapped, [call(state, [b[k] for b in batched]) for k in range(2)]

    # The batch is stacked and the entries taken in NumPy (the same values): eagerly, jnp.stack, the scaling and
    # each entry's indexing compiled a program per layer, 213 of them in this file.
    batch = [np.stack([np.asarray(args[i]), 0.5 * np.asarray(args[i])]) for i in floating]
    mapped, singles = run(state, [jax.device_put(b) for b in batch])
    for k, (scale, single) in enumerate(zip((1.0, 0.5), singles, strict=True)):
        for have, want in zip(_leaves(mapped), _leaves(single), strict=True):
            _assert_close(np.asarray(have)[k], want, f"vmap entry {k} (inputs scaled by {scale})")
