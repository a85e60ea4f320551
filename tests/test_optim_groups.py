"""jaxnets.optim.param_groups and gradient clipping against torch.optim param groups and torch.nn.utils.

Trajectories run a TwoLayerNet (torch names linear1.weight, ...) in float64 for
12 steps and compare every parameter after every step within 1e-10 relative,
the bound of tests/test_optim_torch.py (the same reductions in a different
order, compounded over 12 optimizer steps).
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxnets
from jaxnets import nn, optim
from jaxnets.interop import torch_layout

STEPS = 12
RTOL = 1e-10


class _TorchTwoLayerNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear1 = torch.nn.Linear(3, 5).double()
        self.linear2 = torch.nn.Linear(5, 2).double()

    def forward(self, x):
        return self.linear2(self.linear1(x).clamp(min=0))


def _problem():
    model = jaxnets.TwoLayerNet(3, 5, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    return model, x, y


def _torch_twin(model):
    twin = _TorchTwoLayerNet()
    entries = torch_layout.layout(model)
    params = nnx.state(model, nnx.Param)
    flat = {tuple(p): v for p, v in nnx.to_flat_state(params)}
    twin.load_state_dict({e.torch_name: torch.from_numpy(e.to_torch(flat[e.jax_path][...])) for e in entries})
    return twin


def run_jaxnets(tx, steps=STEPS):
    """The torch-layout weights after every step, and the total norms if ``tx`` clips."""
    model, x, y = _problem()
    entries = torch_layout.layout(model)
    graphdef, params = nnx.split(model, nnx.Param)
    state = tx.init(params)

    def loss(params):
        return jnp.sum((nnx.merge(graphdef, params)(jax.device_put(x)) - jax.device_put(y)) ** 2)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    trajectory, norms = [], []
    for _ in range(steps):
        params, state = step(params, state)
        flat = {tuple(p): np.asarray(v) for p, v in nnx.to_flat_state(params)}
        trajectory.append({e.torch_name: e.to_torch(flat[e.jax_path]) for e in entries})
        norms.append(float(optim.total_norm(state)) if _clips(state) else None)
    return trajectory, norms


def _clips(state) -> bool:
    leaves = jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optim.ClipGradNormState))
    return any(isinstance(s, optim.ClipGradNormState) for s in leaves)


def run_torch(make_optimizer, clip=None, steps=STEPS):
    """``make_optimizer(named_parameters) -> (optimizer, scheduler or None)``; ``clip``: clip_grad_norm_ kwargs."""
    model, x, y = _problem()
    twin = _torch_twin(model)
    optimizer, scheduler = make_optimizer(dict(twin.named_parameters()))
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    trajectory, norms = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        ((twin(x) - y) ** 2).sum().backward()
        if clip is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(twin.parameters(), **clip)))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        trajectory.append({k: v.detach().numpy().copy() for k, v in twin.state_dict().items()})
    return trajectory, norms


def _assert_same(expected, got):
    for step, (want, have) in enumerate(zip(expected, got, strict=True), start=1):
        assert want.keys() == have.keys()
        for name in want:
            err = np.max(np.abs(have[name] - want[name])) / max(np.max(np.abs(want[name])), 1e-300)
            assert err <= RTOL, f"step {step}, {name}: relative error {err:.3g} > {RTOL}"


def _initial():
    model, _, _ = _problem()
    return {k: v.detach().numpy() for k, v in _torch_twin(model).state_dict().items()}


# ---------------------------------------------------------------------------------------------
# parameter groups


def test_param_groups_sgd_lr_weight_decay_momentum_per_group_and_unselected_frozen_match_torch(x64):
    tx = optim.param_groups(
        optim.sgd,
        [
            {"params": "*.bias", "weight_decay": 0.0, "momentum": 0.5},
            {"params": "linear1/kernel", "lr": 0.02, "nesterov": True},  # a jaxnets path selects too
        ],
        lr=0.05,
        momentum=0.9,
        weight_decay=0.1,
    )
    got, _ = run_jaxnets(tx)

    def make(p):
        groups = [
            {"params": [p["linear1.bias"], p["linear2.bias"]], "weight_decay": 0.0, "momentum": 0.5},
            {"params": [p["linear1.weight"]], "lr": 0.02, "nesterov": True},
        ]
        return torch.optim.SGD(groups, lr=0.05, momentum=0.9, weight_decay=0.1), None

    expected, _ = run_torch(make)
    _assert_same(expected, got)
    initial = _initial()
    # linear2.weight is in no group: torch never moves it, and neither does jaxnets.
    assert all(np.array_equal(step["linear2.weight"], initial["linear2.weight"]) for step in got)
    assert not np.allclose(got[-1]["linear1.weight"], initial["linear1.weight"], atol=1e-3)


def test_param_groups_differ_from_one_group(x64):
    # the per-group values are not silently dropped: one group with the defaults takes another path
    grouped, _ = run_jaxnets(optim.param_groups(optim.sgd, [{"params": "*", "lr": 0.02}], lr=0.05))
    single, _ = run_jaxnets(optim.sgd(lr=0.05))
    plain, _ = run_jaxnets(optim.sgd(lr=0.02))
    _assert_same(plain, grouped)
    assert np.max(np.abs(single[-1]["linear1.weight"] - grouped[-1]["linear1.weight"])) > 1e-3


def test_param_groups_adam_betas_eps_and_schedule_on_each_base_lr_match_torch(x64):
    # torch's StepLR(step_size=3, gamma=0.5) scales every group's own initial lr. (optax's staircase
    # exponential_decay is the same schedule but computes in float32 even under x64: 1.2e-9 off.)
    tx = optim.param_groups(
        optim.adam,
        [
            {"params": "linear1.*", "lr": 0.05, "betas": (0.8, 0.95)},
            {"params": "linear2.*", "eps": 1e-3, "amsgrad": True},
        ],
        lr=0.01,
        weight_decay=0.05,
        schedule=lambda base_lr: lambda count: base_lr * 0.5 ** (count // 3),
    )
    got, _ = run_jaxnets(tx)

    def make(p):
        groups = [
            {"params": [p["linear1.weight"], p["linear1.bias"]], "lr": 0.05, "betas": (0.8, 0.95)},
            {"params": [p["linear2.weight"], p["linear2.bias"]], "eps": 1e-3, "amsgrad": True},
        ]
        optimizer = torch.optim.Adam(groups, lr=0.01, weight_decay=0.05)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)

    expected, _ = run_torch(make)
    _assert_same(expected, got)


def test_param_groups_group_schedule_overrides_like_lambdalr_per_group(x64):
    tx = optim.param_groups(
        optim.sgd,
        [
            {"params": "linear1.*", "schedule": lambda base_lr: lambda count: base_lr * 0.9**count},
            {"params": "linear2.*", "lr": 0.02},
        ],
        lr=0.05,
        momentum=0.9,
        schedule=lambda base_lr: lambda count: base_lr / (1.0 + count),
    )
    got, _ = run_jaxnets(tx)

    def make(p):
        groups = [
            {"params": [p["linear1.weight"], p["linear1.bias"]]},
            {"params": [p["linear2.weight"], p["linear2.bias"]], "lr": 0.02},
        ]
        optimizer = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
        lambdas = [lambda epoch: 0.9**epoch, lambda epoch: 1.0 / (1.0 + epoch)]
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)

    expected, _ = run_torch(make)
    _assert_same(expected, got)


def test_param_groups_predicate_and_unselected_defaults(x64):
    tx = optim.param_groups(
        optim.adamw,
        [{"params": lambda name, value: value.ndim < 2, "weight_decay": 0.0}],
        lr=0.01,
        weight_decay=0.2,
        unselected="defaults",
    )
    got, _ = run_jaxnets(tx)

    def make(p):
        groups = [
            {"params": [v for v in p.values() if v.ndim < 2], "weight_decay": 0.0},
            {"params": [v for v in p.values() if v.ndim >= 2]},
        ]
        return torch.optim.AdamW(groups, lr=0.01, weight_decay=0.2), None

    expected, _ = run_torch(make)
    _assert_same(expected, got)


def test_param_groups_with_nnx_optimizer_and_sequential_names():
    model = jaxnets.two_layer_sequential(3, 4, 2, rngs=nnx.Rngs(0))
    names = [e.torch_name for e in torch_layout.layout(model)]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    tx = optim.param_groups(optim.sgd, [{"params": "0.*"}, {"params": "2.bias", "lr": 0.0}], lr=0.1)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    np.testing.assert_allclose(after["layers"][0]["kernel"], before["layers"][0]["kernel"] - 0.1)
    np.testing.assert_allclose(after["layers"][0]["bias"], before["layers"][0]["bias"] - 0.1)
    np.testing.assert_array_equal(after["layers"][2]["bias"], before["layers"][2]["bias"])  # lr 0
    np.testing.assert_array_equal(after["layers"][2]["kernel"], before["layers"][2]["kernel"])  # no group


BAD_GROUPS = [
    pytest.param(
        [{"params": "linear3.*"}],
        {},
        r"group 0's pattern 'linear3\.\*' selects no parameter.*linear1\.weight",
        id="pattern-matching-nothing",
    ),
    pytest.param(
        [{"params": ["*.bias", "*.gamma"]}], {}, r"pattern '\*\.gamma' selects no parameter", id="one-pattern-of-a-list"
    ),
    pytest.param(
        [{"params": lambda name, value: value.ndim > 2}], {}, "predicate <lambda> selects no parameter", id="predicate"
    ),
    pytest.param(
        [{"params": "*.bias"}, {"params": "linear1.*"}],
        {},
        r"linear1\.bias is selected by group 0 and by group 1; torch\.optim refuses",
        id="param-in-two-groups",
    ),
    pytest.param([{"params": "*"}], {"unselected": "error"}, None, id="unselected-error-but-all-selected"),
    pytest.param(
        [{"params": "*.bias"}],
        {"unselected": "error"},
        r"no group selects linear1\.weight, linear2\.weight",
        id="unselected-error",
    ),
]


@pytest.mark.parametrize(("groups", "kwargs", "message"), BAD_GROUPS)
def test_param_groups_refuses_bad_selections_at_init(x64, groups, kwargs, message):
    model, _, _ = _problem()
    params = nnx.state(model, nnx.Param)
    tx = optim.param_groups(optim.sgd, groups, lr=0.1, **kwargs)
    if message is None:
        tx.init(params)
        return
    with pytest.raises(ValueError, match=message):
        tx.init(params)
    with pytest.raises(ValueError, match=message):  # the same under jit, at trace time
        jax.jit(tx.init)(params)


BAD_ARGUMENTS = [
    pytest.param(
        [{"params": "*", "weight_decy": 0.0}],
        {},
        r"group 0 has 'weight_decy', which sgd does not take; expected 'params', 'schedule' or sgd's arguments: lr,",
        id="key-not-an-argument",
    ),
    pytest.param([{"params": "*"}], {"betas": (0.9, 0.99)}, "the defaults have 'betas', which sgd", id="default-key"),
    pytest.param([{"lr": 0.1}], {}, "group 0 is .*expected a dict with a 'params' key", id="no-params"),
    pytest.param([{"params": 3}], {}, "group 0 has params=3; expected a glob pattern", id="params-not-a-pattern"),
    pytest.param([{"params": []}], {}, "group 0 has an empty `params` list", id="empty-params"),
    pytest.param([], {}, "expected a non-empty list of dicts", id="no-groups"),
    pytest.param({"params": "*"}, {}, "expected a non-empty list of dicts", id="a-dict-not-a-list"),
    pytest.param(
        [{"params": "*"}, {"params": "x", "momentum": -1.0}], {}, "group 1: sgd got momentum=-1.0", id="refused-value"
    ),
    pytest.param([{"params": "*"}], {"unselected": "ignore"}, "unselected='ignore'; expected one of", id="unselected"),
    pytest.param(
        [{"params": "*", "lr": optax.constant_schedule(0.1)}],
        {"schedule": lambda base_lr: base_lr},
        "group 0 has lr=.*, a schedule, and a `schedule` of the base lr",
        id="schedule-of-a-schedule",
    ),
]


@pytest.mark.parametrize(("groups", "kwargs", "message"), BAD_ARGUMENTS)
def test_param_groups_refuses_bad_arguments_at_construction(groups, kwargs, message):
    with pytest.raises(ValueError, match=message):
        optim.param_groups(optim.sgd, groups, lr=0.1, **kwargs)


def test_param_groups_refuses_an_optimizer_instance():
    with pytest.raises(ValueError, match="needs the optimizer function"):
        optim.param_groups(optim.sgd(lr=0.1), [{"params": "*"}])


# ---------------------------------------------------------------------------------------------
# clipping


def _grads(scale: float):
    rng = np.random.default_rng(1)
    shapes = {"a": (3, 4), "b": (4,), "c": (2, 3, 2), "d": ()}
    return {k: np.array(scale * rng.normal(size=s)) for k, s in shapes.items()}


NORMS = [2.0, 1.0, 3.0, math.inf, "inf", 0.5]


@pytest.mark.parametrize("norm_type", NORMS, ids=str)
@pytest.mark.parametrize("scale", [1e-3, 10.0], ids=["max-norm-not-hit", "max-norm-hit"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_clip_grad_norm_matches_torch(x64, norm_type, scale, jit):
    grads = _grads(scale)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in grads.items()}
    for k, t in tensors.items():
        t.grad = torch.from_numpy(grads[k].copy())
    max_norm = 1.5
    expected_norm = torch.nn.utils.clip_grad_norm_(tensors.values(), max_norm, norm_type)
    tx = optim.clip_grad_norm(max_norm, norm_type)
    update = jax.jit(tx.update) if jit else tx.update
    jgrads = jax.tree.map(jax.device_put, grads)
    clipped, state = update(jgrads, tx.init(jgrads))
    assert state.total_norm.dtype == jnp.float64
    np.testing.assert_allclose(optim.total_norm(state), expected_norm.numpy(), rtol=1e-14)
    np.testing.assert_allclose(optim.get_total_norm(jgrads, norm_type), expected_norm.numpy(), rtol=1e-14)
    for k, t in tensors.items():
        np.testing.assert_allclose(clipped[k], t.grad.numpy(), rtol=1e-14, atol=0)
    hit = float(expected_norm) > max_norm
    assert hit == (scale == 10.0)
    assert np.array_equal(clipped["a"], grads["a"]) == (not hit)  # times exactly 1.0 unless hit


def test_clip_grad_norm_keeps_torch_epsilon(x64):
    # torch divides by norm + 1e-6 and multiplies even when not clipping: a norm of exactly max_norm
    # is scaled by 5 / (5 + 1e-6), which optax.clip_by_global_norm leaves alone.
    grads = {"w": jnp.array([3.0, 4.0])}
    tx = optim.clip_grad_norm(5.0)
    clipped, _ = tx.update(grads, tx.init(grads))
    t = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    t.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    torch.nn.utils.clip_grad_norm_([t], 5.0)
    np.testing.assert_array_equal(clipped["w"], t.grad.numpy())
    np.testing.assert_allclose(clipped["w"], grads["w"] * 5.0 / (5.0 + 1e-6), rtol=1e-15)
    optax_clipped, _ = optax.clip_by_global_norm(5.0).update(grads, optax.EmptyState())
    np.testing.assert_allclose(optax_clipped["w"], grads["w"], rtol=1e-15)
    assert np.max(np.abs(clipped["w"] / grads["w"] - 1)) > 1e-7


@pytest.mark.parametrize("bad", [np.inf, np.nan], ids=["inf", "nan"])
def test_clip_grad_norm_nonfinite_matches_torch_or_raises(x64, bad):
    grads = {"a": np.array([1.0, bad]), "b": np.array([2.0, -3.0])}
    tensors = [torch.tensor(v, requires_grad=True) for v in grads.values()]
    for t, v in zip(tensors, grads.values(), strict=True):
        t.grad = torch.from_numpy(v.copy())
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(tensors, 1.0, error_if_nonfinite=True)
    jgrads = jax.tree.map(jax.device_put, grads)
    tx = optim.clip_grad_norm(1.0, error_if_nonfinite=True)
    state = tx.init(jgrads)
    message = "The total norm of order 2.0 for gradients from `parameters` is non-finite"
    with pytest.raises(RuntimeError, match=message):
        tx.update(jgrads, state)
    with pytest.raises(RuntimeError, match=message):  # under jit: a JaxRuntimeError, a RuntimeError
        jax.block_until_ready(jax.jit(tx.update)(jgrads, state))
    finite = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([2.0, -3.0])}
    jax.block_until_ready(jax.jit(tx.update)(finite, state))  # finite gradients pass
    # without the check: torch's arithmetic, NaNs and zeros where torch has them
    expected_norm = torch.nn.utils.clip_grad_norm_(tensors, 1.0)
    quiet = optim.clip_grad_norm(1.0)
    clipped, state = jax.jit(quiet.update)(jgrads, quiet.init(jgrads))
    np.testing.assert_array_equal(optim.total_norm(state), expected_norm.numpy())
    for got, t in zip(clipped.values(), tensors, strict=True):
        np.testing.assert_array_equal(got, t.grad.numpy())


def test_clip_grad_norm_float32_and_empty(x64):
    grads = {"w": jnp.array([3.0, 4.0], jnp.float32)}
    tx = optim.clip_grad_norm(1.0)
    clipped, state = jax.jit(tx.update)(grads, tx.init(grads))
    assert clipped["w"].dtype == jnp.float32 and state.total_norm.dtype == jnp.float32
    t = torch.tensor([3.0, 4.0], requires_grad=True)
    t.grad = torch.tensor([3.0, 4.0])
    torch.nn.utils.clip_grad_norm_([t], 1.0)
    np.testing.assert_array_equal(clipped["w"], t.grad.numpy())
    assert float(optim.get_total_norm({})) == 0.0  # torch.nn.utils.get_total_norm([]) is tensor(0.)


@pytest.mark.parametrize("clip_value", [0.5, 0.0, 10.0])
def test_clip_grad_value_matches_torch(x64, clip_value):
    grads = _grads(1.0)
    tensors = [torch.tensor(v, requires_grad=True) for v in grads.values()]
    for t, v in zip(tensors, grads.values(), strict=True):
        t.grad = torch.from_numpy(v.copy())
    torch.nn.utils.clip_grad_value_(tensors, clip_value)
    tx = optim.clip_grad_value(clip_value)
    clipped, _ = jax.jit(tx.update)(jax.tree.map(jax.device_put, grads), tx.init(grads))
    for got, t in zip(clipped.values(), tensors, strict=True):
        np.testing.assert_array_equal(got, t.grad.numpy())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: optim.clip_grad_norm(-1.0), r"max_norm=-1\.0; expected a number >= 0"),
        (lambda: optim.clip_grad_norm(float("nan")), "max_norm=nan"),
        (lambda: optim.clip_grad_norm("1"), "max_norm='1'"),
        (lambda: optim.clip_grad_norm(1.0, norm_type="two"), "norm_type='two'; expected a number"),
        (lambda: optim.clip_grad_value(-0.5), r"clip_value=-0\.5; expected a number >= 0"),
    ],
    ids=["negative-max-norm", "nan-max-norm", "string-max-norm", "norm-type", "negative-clip-value"],
)
def test_clipping_refuses_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_total_norm_reads_chains_and_nnx_optimizer_state():
    model = jaxnets.TwoLayerNet(3, 4, 2, rngs=nnx.Rngs(0))
    tx = optax.chain(optim.clip_grad_norm(1.0), optim.sgd(lr=0.1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    np.testing.assert_allclose(optim.total_norm(optimizer.opt_state), math.sqrt(3 * 4 + 4 + 4 * 2 + 2), rtol=1e-6)
    with pytest.raises(ValueError, match="exactly one ClipGradNormState; this one has 0"):
        optim.total_norm(optim.sgd(lr=0.1).init({"w": jnp.zeros(2)}))
    twice = optax.chain(optim.clip_grad_norm(1.0), optim.clip_grad_norm(2.0))
    with pytest.raises(ValueError, match="this one has 2"):
        optim.total_norm(twice.init({"w": jnp.zeros(2)}))


# ---------------------------------------------------------------------------------------------
# the recipe: clipping over all parameters, then groups, with a schedule


def test_clip_then_param_groups_with_schedule_matches_torch_recipe(x64):
    for max_norm in (1.0, 100.0):  # clipping on every step, and never
        tx = optax.chain(
            optim.clip_grad_norm(max_norm),
            optim.param_groups(
                optim.adamw,
                [
                    {"params": lambda name, value: value.ndim >= 2},
                    {"params": lambda name, value: value.ndim < 2, "weight_decay": 0.0},
                ],
                lr=0.02,
                weight_decay=0.1,
                schedule=lambda base_lr: lambda count: base_lr * 0.5 ** (count // 4),  # StepLR(4, 0.5)
            ),
        )
        got, got_norms = run_jaxnets(tx)

        def make(p):
            groups = [
                {"params": [v for v in p.values() if v.ndim >= 2]},
                {"params": [v for v in p.values() if v.ndim < 2], "weight_decay": 0.0},
            ]
            optimizer = torch.optim.AdamW(groups, lr=0.02, weight_decay=0.1)
            return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)

        expected, norms = run_torch(make, clip=dict(max_norm=max_norm))
        _assert_same(expected, got)
        np.testing.assert_allclose(got_norms, norms, rtol=RTOL)
        assert (max(norms) > max_norm) == (max_norm == 1.0)


def test_docs_recipe_runs_and_prints_torch_numbers():
    from test_readme import _python_blocks, _section

    section = _section("docs/optimizers.md", "Parameter groups and gradient clipping")
    (block,) = _python_blocks(section)
    namespace: dict = {}
    exec(compile(block, "docs/optimizers.md (param groups)", "exec"), namespace)
    model, tx = namespace["model"], namespace["tx"]
    assert isinstance(model, nn.Module) and tx is not None
    printed = namespace["printed"]

    torch.manual_seed(0)
    twin = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in namespace["initial"].items()})
    decay = [p for p in twin.parameters() if p.ndim >= 2]
    no_decay = [p for p in twin.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=0.01, weight_decay=0.1
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    x, y = torch.from_numpy(np.array(namespace["x"])), torch.from_numpy(np.array(namespace["y"]))
    norms = []
    for _ in range(12):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(twin(x), y).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0)))
        optimizer.step()
        scheduler.step()
    # float32 on both sides: the printed 4-digit norms agree (1e-5 relative covers the rounding)
    np.testing.assert_allclose(printed, norms, rtol=1e-5)
    shown = re.search(r"prints the gradient norms.*?```\n(.*?)```", section, flags=re.S).group(1).split()
    np.testing.assert_allclose([float(s) for s in shown], norms, rtol=1e-3)
    for name, value in twin.state_dict().items():
        np.testing.assert_allclose(np.asarray(model.state_dict()[name]), value.numpy(), rtol=1e-4, atol=1e-6)


def test_clip_and_param_groups_in_trainer_match_the_plain_loop(x64):
    # jaxnets.Trainer keeps the nnx.State paths, so names select there too; its steps equal run_jaxnets'.
    tx = optax.chain(
        optim.clip_grad_norm(0.5),
        optim.param_groups(optim.sgd, [{"params": "linear1.*", "lr": 0.02}, {"params": "linear2.weight"}], lr=0.05),
    )
    expected, norms = run_jaxnets(tx, steps=3)
    model, x, y = _problem()
    trainer = jaxnets.Trainer(model, tx, lambda m, x, y: jnp.sum((m(x) - y) ** 2))
    for step in range(3):
        trainer.step(jax.device_put(x), jax.device_put(y))
        np.testing.assert_allclose(optim.total_norm(trainer.opt_state), norms[step], rtol=1e-12)
    entries = torch_layout.layout(trainer.model)
    flat = {tuple(p): np.asarray(v) for p, v in nnx.to_flat_state(trainer.params)}
    for e in entries:
        np.testing.assert_allclose(e.to_torch(flat[e.jax_path]), expected[-1][e.torch_name], rtol=1e-12)
    np.testing.assert_array_equal(expected[-1]["linear2.bias"], _initial()["linear2.bias"])  # in no group


def test_param_groups_select_torch_names_of_a_torch_mirror_model():
    # jaxnets.nn keeps torch's names, ModuleLists included: layers.1.* is the second encoder layer.
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, rngs=nnx.Rngs(0)), 2)
    tx = optim.param_groups(optim.sgd, [{"params": "layers.1.*", "lr": 0.0}], lr=0.1, unselected="defaults")
    params = nnx.state(model, nnx.Param)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    moved = {".".join(map(str, path)): bool(np.any(np.asarray(u) != 0)) for path, u in nnx.to_flat_state(updates)}
    assert moved and all(moved[name] == name.startswith("layers.0.") for name in moved)
    assert set(moved) == set(model.state_dict())  # the same names as torch's state_dict (no buffers here)
