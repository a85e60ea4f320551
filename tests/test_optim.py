"""jaxnets.optim against NumPy transcriptions of torch.optim's documented algorithms.

The references below follow the pseudo-code of torch 2.x's single-tensor
optimizers line by line, one parameter array at a time; they use no torch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tolerances import F64_ATOL, F64_RTOL

from jaxnets import optim

STEPS = 20
SHAPES = {"fc1": {"kernel": (3, 4), "bias": (4,)}, "fc2": {"kernel": (4,), "bias": ()}}


def _sample(rng, scale=1.0):
    return jax.tree.map(lambda shape: rng.normal(size=shape) * scale, SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def _problem():
    rng = np.random.default_rng(0)
    params = _sample(rng)
    # Shrinking gradients make exp_avg_sq fall, so AMSGrad's running max matters.
    grads = [_sample(rng, 2.0 ** (-t / 4)) for t in range(STEPS)]
    return params, grads


# NumPy references: one parameter array `p` and its gradients, in torch's order.


def ref_sgd(p, grads, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False):
    buf = None
    for g in grads:
        g = g + weight_decay * p
        if momentum != 0:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p, {"step": len(grads), "momentum_buffer": buf}


def ref_adam(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    exp_avg = np.zeros_like(p)
    exp_avg_sq = np.zeros_like(p)
    max_exp_avg_sq = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        exp_avg = b1 * exp_avg + (1 - b1) * g
        exp_avg_sq = b2 * exp_avg_sq + (1 - b2) * g * g
        if amsgrad:
            max_exp_avg_sq = np.maximum(max_exp_avg_sq, exp_avg_sq)
            second_moment = max_exp_avg_sq
        else:
            second_moment = exp_avg_sq
        denom = np.sqrt(second_moment) / np.sqrt(1 - b2**t) + eps
        p = p - lr / (1 - b1**t) * exp_avg / denom
    state = {
        "step": len(grads),
        "exp_avg": exp_avg,
        "exp_avg_sq": exp_avg_sq,
        "max_exp_avg_sq": max_exp_avg_sq,
    }
    return p, state


def ref_adamw(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
    return ref_adam(p, grads, lr, betas, eps, weight_decay, amsgrad, decoupled=True)


def ref_rmsprop(p, grads, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False):
    square_avg = np.zeros_like(p)
    grad_avg = np.zeros_like(p)
    buf = np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        if centered:
            grad_avg = alpha * grad_avg + (1 - alpha) * g
            avg = np.sqrt(square_avg - grad_avg**2) + eps
        else:
            avg = np.sqrt(square_avg) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p, {"square_avg": square_avg, "grad_avg": grad_avg, "momentum_buffer": buf}


def ref_adagrad(p, grads, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10):
    state_sum = np.full_like(p, initial_accumulator_value)
    for step, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum = state_sum + g * g
        p = p - clr * g / (np.sqrt(state_sum) + eps)
    return p, {"step": len(grads), "sum": state_sum}


# (id, optimizer, reference, kwargs): every option of every optimizer, alone and combined.
CASES = [
    ("sgd", optim.sgd, ref_sgd, dict(lr=0.1)),
    ("sgd-weight_decay", optim.sgd, ref_sgd, dict(lr=0.1, weight_decay=0.1)),
    ("sgd-momentum", optim.sgd, ref_sgd, dict(lr=0.1, momentum=0.9)),
    ("sgd-nesterov", optim.sgd, ref_sgd, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (
        "sgd-nesterov-weight_decay",
        optim.sgd,
        ref_sgd,
        dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.05),
    ),
    ("sgd-dampening", optim.sgd, ref_sgd, dict(lr=0.1, momentum=0.9, dampening=0.3)),
    (
        "sgd-dampening-weight_decay",
        optim.sgd,
        ref_sgd,
        dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.05),
    ),
    ("sgd-dampening-without-momentum", optim.sgd, ref_sgd, dict(lr=0.1, dampening=0.3)),
    ("adam", optim.adam, ref_adam, dict(lr=0.01)),
    ("adam-betas-eps", optim.adam, ref_adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-3)),
    ("adam-weight_decay", optim.adam, ref_adam, dict(lr=0.01, weight_decay=0.1)),
    ("adam-amsgrad", optim.adam, ref_adam, dict(lr=0.01, amsgrad=True)),
    ("adam-amsgrad-weight_decay", optim.adam, ref_adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("adamw", optim.adamw, ref_adamw, dict(lr=0.01)),
    ("adamw-weight_decay", optim.adamw, ref_adamw, dict(lr=0.01, weight_decay=0.3)),
    ("adamw-no-weight_decay", optim.adamw, ref_adamw, dict(lr=0.01, weight_decay=0)),
    ("adamw-amsgrad", optim.adamw, ref_adamw, dict(lr=0.01, amsgrad=True, weight_decay=0.3)),
    ("rmsprop", optim.rmsprop, ref_rmsprop, dict(lr=0.01)),
    ("rmsprop-alpha-eps", optim.rmsprop, ref_rmsprop, dict(lr=0.01, alpha=0.9, eps=1e-3)),
    ("rmsprop-weight_decay", optim.rmsprop, ref_rmsprop, dict(lr=0.01, weight_decay=0.1)),
    ("rmsprop-momentum", optim.rmsprop, ref_rmsprop, dict(lr=0.01, momentum=0.9)),
    ("rmsprop-centered", optim.rmsprop, ref_rmsprop, dict(lr=0.01, centered=True)),
    (
        "rmsprop-centered-momentum-weight_decay",
        optim.rmsprop,
        ref_rmsprop,
        dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.1),
    ),
    ("adagrad", optim.adagrad, ref_adagrad, dict(lr=0.1)),
    ("adagrad-lr_decay", optim.adagrad, ref_adagrad, dict(lr=0.1, lr_decay=0.05)),
    ("adagrad-weight_decay", optim.adagrad, ref_adagrad, dict(lr=0.1, weight_decay=0.1)),
    (
        "adagrad-initial_accumulator_value-eps",
        optim.adagrad,
        ref_adagrad,
        dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-3),
    ),
    (
        "adagrad-all-options",
        optim.adagrad,
        ref_adagrad,
        dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.5),
    ),
]
CASE_IDS = [case[0] for case in CASES]


def _run(optimizer, params, grads, dtype):
    """Apply `optimizer` to `params` for every gradient in `grads`, jitted; return params and state."""
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads:
        params, state = step(params, state, jax.tree.map(lambda x: jnp.asarray(x, dtype), g))
    return params, state


def _reference(reference, kwargs, params, grads):
    """Run `reference` on each parameter array; return the params tree and the per-array states."""
    leaves, treedef = jax.tree.flatten(params)
    grad_leaves = [jax.tree.leaves(g) for g in grads]
    results = [reference(p, [g[i] for g in grad_leaves], **kwargs) for i, p in enumerate(leaves)]
    return jax.tree.unflatten(treedef, [p for p, _ in results]), [state for _, state in results]


def _state_of_type(state, cls):
    (found,) = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, cls)) if isinstance(s, cls)]
    return found


@pytest.mark.parametrize(("name", "optimizer", "reference", "kwargs"), CASES, ids=CASE_IDS)
def test_optimizer_matches_torch_algorithm_in_float64(x64, name, optimizer, reference, kwargs):
    params, grads = _problem()
    actual, _ = _run(optimizer(**kwargs), params, grads, jnp.float64)
    expected, _ = _reference(reference, kwargs, params, grads)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(a), e, rtol=F64_RTOL, atol=F64_ATOL)


@pytest.mark.parametrize(
    ("optimizer", "reference", "kwargs", "state_type"),
    [
        (optim.sgd, ref_sgd, dict(lr=0.1, momentum=0.9, dampening=0.3), optim.DampenedTraceState),
        (optim.adam, ref_adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1), optim.TorchAmsgradState),
        (optim.adamw, ref_adamw, dict(lr=0.01, amsgrad=True), optim.TorchAmsgradState),
        (
            optim.adagrad,
            ref_adagrad,
            dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.5),
            optim.TorchAdagradState,
        ),
    ],
    ids=["sgd-dampening", "adam-amsgrad", "adamw-amsgrad", "adagrad"],
)
def test_custom_state_holds_torch_state_under_torch_names(x64, optimizer, reference, kwargs, state_type):
    params, grads = _problem()
    _, state = _run(optimizer(**kwargs), params, grads, jnp.float64)
    state = _state_of_type(state, state_type)
    _, expected_states = _reference(reference, kwargs, params, grads)
    for field in state_type._fields:
        value = getattr(state, field)
        if field == "step":
            assert value.dtype == jnp.int32 and int(value) == STEPS
            continue
        for a, expected in zip(jax.tree.leaves(value), expected_states, strict=True):
            np.testing.assert_allclose(np.asarray(a), expected[field], rtol=F64_RTOL, atol=F64_ATOL)


def test_amsgrad_test_data_exercises_the_running_max():
    # Without a falling second moment AMSGrad equals Adam and the amsgrad cases prove nothing.
    params, grads = _problem()
    with_max, _ = _reference(ref_adam, dict(lr=0.01, amsgrad=True), params, grads)
    without_max, _ = _reference(ref_adam, dict(lr=0.01), params, grads)
    differences = [
        np.max(np.abs(a - b)) for a, b in zip(jax.tree.leaves(with_max), jax.tree.leaves(without_max), strict=True)
    ]
    assert max(differences) > 1e-6


@pytest.mark.parametrize(("name", "optimizer", "reference", "kwargs"), CASES, ids=CASE_IDS)
def test_optimizer_update_compiles_once(name, optimizer, reference, kwargs):
    # A state whose dtype or weak type changes after the first step would retrace every step.
    params, grads = _problem()
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    transform = optimizer(**kwargs)
    state = transform.init(params)
    traces = 0

    @jax.jit
    def step(params, state, grads):
        nonlocal traces
        traces += 1
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads[:3]:
        params, state = step(params, state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g))
    assert traces == 1


def _assert_keeps_dtype(transform, dtype):
    """Two updates of `transform` on `dtype` params must produce `dtype` updates and state."""
    params, grads = _problem()
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    state = transform.init(params)
    for g in grads[:2]:
        updates, state = transform.update(jax.tree.map(lambda x: jnp.asarray(x, dtype), g), state, params)
        params = optax.apply_updates(params, updates)
    # optax.apply_updates casts back to the param dtype, so the updates and state are what can drift.
    assert {leaf.dtype for leaf in jax.tree.leaves(updates)} == {jnp.dtype(dtype)}
    assert {leaf.dtype for leaf in jax.tree.leaves(state)} <= {jnp.dtype(dtype), jnp.dtype(jnp.int32)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize(("name", "optimizer", "reference", "kwargs"), CASES, ids=CASE_IDS)
def test_optimizer_keeps_low_precision_params_in_their_dtype_under_x64(x64, name, optimizer, reference, kwargs, dtype):
    _assert_keeps_dtype(optimizer(**kwargs), dtype)


def _np(value):
    return np.float64(value)


@pytest.mark.parametrize(
    "make_transform",
    [
        pytest.param(
            lambda: optim.sgd(lr=_np(0.1), momentum=_np(0.9), dampening=_np(0.1), weight_decay=_np(0.1)),
            id="sgd-dampening",
        ),
        pytest.param(lambda: optim.sgd(lr=_np(0.1), momentum=_np(0.9), nesterov=True), id="sgd-nesterov"),
        pytest.param(
            lambda: optim.adam(lr=_np(0.01), betas=(_np(0.8), _np(0.99)), eps=_np(1e-3), weight_decay=_np(0.1)),
            id="adam",
        ),
        pytest.param(lambda: optim.adam(lr=_np(0.01), betas=(_np(0.8), _np(0.99)), amsgrad=True), id="adam-amsgrad"),
        pytest.param(lambda: optim.adamw(lr=_np(0.01), weight_decay=_np(0.1)), id="adamw"),
        pytest.param(lambda: optim.adamw(lr=_np(0.01), weight_decay=_np(0.1), amsgrad=True), id="adamw-amsgrad"),
        pytest.param(
            lambda: optim.rmsprop(
                lr=_np(0.01),
                alpha=_np(0.9),
                eps=_np(1e-3),
                weight_decay=_np(0.1),
                momentum=_np(0.9),
                centered=True,
            ),
            id="rmsprop",
        ),
        pytest.param(
            lambda: optim.adagrad(
                lr=_np(0.1),
                lr_decay=_np(0.1),
                weight_decay=_np(0.1),
                initial_accumulator_value=_np(0.5),
                eps=_np(1e-3),
            ),
            id="adagrad",
        ),
        pytest.param(lambda: optim.dampened_trace(_np(0.9), _np(0.1)), id="dampened_trace"),
        pytest.param(lambda: optim.scale_by_torch_amsgrad(_np(0.8), _np(0.99), _np(1e-3)), id="scale_by_torch_amsgrad"),
        pytest.param(lambda: optim.scale_by_torch_adagrad(_np(0.1), _np(0.5), _np(1e-3)), id="scale_by_torch_adagrad"),
    ],
)
def test_optimizer_keeps_bfloat16_with_numpy_float64_hyperparameters_under_x64(x64, make_transform):
    # NumPy scalars are strongly typed in JAX: used as they are, they would promote every update to float64.
    _assert_keeps_dtype(make_transform(), jnp.bfloat16)


@pytest.mark.parametrize(
    ("optimizer", "kwargs", "message"),
    [
        pytest.param(optim.sgd, dict(lr=-0.1), r"sgd got lr=-0.1; expected a value >= 0", id="sgd-lr"),
        pytest.param(optim.sgd, dict(lr=float("nan")), r"sgd got lr=nan; expected a value >= 0", id="sgd-lr-nan"),
        pytest.param(
            optim.sgd, dict(momentum=-0.9), r"sgd got momentum=-0.9; expected a value >= 0", id="sgd-momentum"
        ),
        pytest.param(
            optim.sgd,
            dict(weight_decay=-1),
            r"sgd got weight_decay=-1; expected a value >= 0",
            id="sgd-weight_decay",
        ),
        pytest.param(
            optim.sgd,
            dict(nesterov=True),
            r"sgd got nesterov=True with momentum=0 and dampening=0; Nesterov momentum needs momentum > 0",
            id="sgd-nesterov-without-momentum",
        ),
        pytest.param(
            optim.sgd,
            dict(momentum=0.9, dampening=0.1, nesterov=True),
            r"dampening=0.1; Nesterov momentum needs momentum > 0 and dampening == 0",
            id="sgd-nesterov-with-dampening",
        ),
        pytest.param(
            optim.adam,
            dict(lr=-1e-3),
            r"adam got lr=-0.001; expected a value >= 0, as torch.optim.Adam",
            id="adam-lr",
        ),
        pytest.param(optim.adam, dict(eps=-1e-8), r"adam got eps=-1e-08; expected a value >= 0", id="adam-eps"),
        pytest.param(
            optim.adam,
            dict(weight_decay=-0.1),
            r"adam got weight_decay=-0.1; expected a value >= 0",
            id="adam-weight_decay",
        ),
        pytest.param(
            optim.adam,
            dict(betas=(1.0, 0.999)),
            r"adam got betas\[0\]=1.0; expected a value in \[0, 1\)",
            id="adam-beta1",
        ),
        pytest.param(
            optim.adam,
            dict(betas=(0.9, -0.1)),
            r"adam got betas\[1\]=-0.1; expected a value in \[0, 1\)",
            id="adam-beta2",
        ),
        pytest.param(
            optim.adam,
            dict(betas=(0.9,)),
            r"adam got betas=\(0.9,\); expected a pair \(beta1, beta2\)",
            id="adam-one-beta",
        ),
        pytest.param(
            optim.adamw,
            dict(weight_decay=-0.01),
            r"adamw got weight_decay=-0.01; .* torch.optim.AdamW",
            id="adamw-weight_decay",
        ),
        pytest.param(optim.rmsprop, dict(lr=-0.01), r"rmsprop got lr=-0.01; expected a value >= 0", id="rmsprop-lr"),
        pytest.param(
            optim.rmsprop,
            dict(alpha=-0.99),
            r"rmsprop got alpha=-0.99; expected a value >= 0",
            id="rmsprop-alpha",
        ),
        pytest.param(
            optim.rmsprop, dict(eps=-1e-8), r"rmsprop got eps=-1e-08; expected a value >= 0", id="rmsprop-eps"
        ),
        pytest.param(
            optim.rmsprop,
            dict(weight_decay=-0.1),
            r"rmsprop got weight_decay=-0.1; expected a value >= 0",
            id="rmsprop-weight_decay",
        ),
        pytest.param(
            optim.rmsprop,
            dict(momentum=-0.9),
            r"rmsprop got momentum=-0.9; expected a value >= 0",
            id="rmsprop-momentum",
        ),
        pytest.param(optim.adagrad, dict(lr=-0.01), r"adagrad got lr=-0.01; expected a value >= 0", id="adagrad-lr"),
        pytest.param(
            optim.adagrad,
            dict(lr_decay=-0.1),
            r"adagrad got lr_decay=-0.1; expected a value >= 0",
            id="adagrad-lr_decay",
        ),
        pytest.param(
            optim.adagrad,
            dict(weight_decay=-0.1),
            r"adagrad got weight_decay=-0.1; expected a value >= 0",
            id="adagrad-weight_decay",
        ),
        pytest.param(
            optim.adagrad,
            dict(initial_accumulator_value=-1),
            r"adagrad got initial_accumulator_value=-1; expected a value >= 0",
            id="adagrad-initial_accumulator_value",
        ),
        pytest.param(
            optim.adagrad,
            dict(eps=-1e-10),
            r"adagrad got eps=-1e-10; expected a value >= 0",
            id="adagrad-eps",
        ),
    ],
)
def test_optimizer_rejects_what_torch_rejects(optimizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimizer(**kwargs)
