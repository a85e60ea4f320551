"""jaxnets.optim's options beyond torch's own test configurations, against torch.optim.

``maximize`` with every other option, an lr schedule applied at torch's step
count, hyperparameters torch refuses, dtypes kept, and the state torch keeps
(ASGD's averaged parameters, NAdam's mu_product, Rprop's step sizes).
Same problem, steps and tolerance as ``test_optim_torch``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from test_optim_torch import RTOL, STEPS, _loss, _problem, run_jaxnets, run_torch

from jaxnets import optim

# (torch class, jaxnets function, options), each run with maximize=True: every math-changing
# option of each optimizer appears in at least one row.
MAXIMIZE = [
    (torch.optim.SGD, optim.sgd, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    (torch.optim.SGD, optim.sgd, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (torch.optim.Adam, optim.adam, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1, amsgrad=True)),
    (torch.optim.Adam, optim.adam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
    (torch.optim.Adam, optim.adam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    (torch.optim.AdamW, optim.adamw, dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    (torch.optim.RMSprop, optim.rmsprop, dict(lr=0.01, alpha=0.9, weight_decay=0.1, momentum=0.5, centered=True)),
    (torch.optim.Adagrad, optim.adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.5)),
    (torch.optim.Adadelta, optim.adadelta, dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    (torch.optim.Adamax, optim.adamax, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1)),
    (torch.optim.NAdam, optim.nadam, dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1, momentum_decay=0.01)),
    (torch.optim.NAdam, optim.nadam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    (torch.optim.RAdam, optim.radam, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1)),
    (torch.optim.RAdam, optim.radam, dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1, decoupled_weight_decay=True)),
    (torch.optim.ASGD, optim.asgd, dict(lr=0.05, lambd=0.01, alpha=0.5, t0=3, weight_decay=0.1)),
    (torch.optim.Rprop, optim.rprop, dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2))),
    (
        torch.optim.Adafactor,
        optim.adafactor,
        dict(lr=0.05, beta2_decay=-0.5, eps=(1e-3, 1e-2), d=1.2, weight_decay=0.1),
    ),
]


def _ids(cases):
    return [f"{cls.__name__}-{'-'.join(kwargs)}" for cls, _, kwargs in cases]


def _assert_same_trajectory(expected, got, params):
    for step, (want, have) in enumerate(zip(expected, got, strict=True), start=1):
        for name in want:
            err = np.max(np.abs(have[name] - want[name])) / max(np.max(np.abs(want[name])), 1e-300)
            assert err <= RTOL, f"step {step}, {name}: relative error {err:.3g} > {RTOL}"
    assert max(np.max(np.abs(expected[-1][k] - params[k])) for k in params) > 1e-4


@pytest.mark.parametrize(("torch_cls", "make", "kwargs"), MAXIMIZE, ids=_ids(MAXIMIZE))
def test_maximize_with_every_option_matches_torch(x64, torch_cls, make, kwargs):
    params, a, b = _problem()
    kwargs = dict(kwargs, maximize=True)
    expected = run_torch(torch_cls, kwargs, params, a, b)
    _assert_same_trajectory(expected, run_jaxnets(make, kwargs, params, a, b), params)
    # maximize changes the trajectory, so the option is not silently ignored.
    minimized = run_jaxnets(make, dict(kwargs, maximize=False), params, a, b)
    assert max(np.max(np.abs(minimized[-1][k] - expected[-1][k])) for k in params) > 1e-4


def _factor(count):
    """A non-monotone lr multiplier, the same numbers in Python and traced JAX."""
    return 0.8**count * (1 + 0.5 * (count % 3))


def run_torch_scheduled(torch_cls, kwargs, params, a, b):
    """torch's weights per step, with LambdaLR(_factor) stepped after every optimizer step."""
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    a = {k: torch.tensor(v) for k, v in a.items()}
    b = {k: torch.tensor(v) for k, v in b.items()}
    optimizer = torch_cls(list(p.values()), **kwargs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _factor)
    history = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        _loss(p, a, b, torch.sin).backward()
        optimizer.step()
        scheduler.step()
        history.append({k: v.detach().numpy().copy() for k, v in p.items()})
    return history


SCHEDULED = [
    (torch.optim.SGD, optim.sgd, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    (torch.optim.SGD, optim.sgd, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (torch.optim.Adam, optim.adam, dict(lr=0.05, weight_decay=0.1)),
    (torch.optim.Adam, optim.adam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
    (torch.optim.AdamW, optim.adamw, dict(lr=0.05, weight_decay=0.1)),
    (torch.optim.RMSprop, optim.rmsprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (torch.optim.Adagrad, optim.adagrad, dict(lr=0.1, lr_decay=0.05)),
    (torch.optim.Adadelta, optim.adadelta, dict(lr=0.5, weight_decay=0.1)),
    (torch.optim.Adamax, optim.adamax, dict(lr=0.05, weight_decay=0.1)),
    (torch.optim.NAdam, optim.nadam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    (torch.optim.NAdam, optim.nadam, dict(lr=0.05, weight_decay=0.1)),
    (torch.optim.RAdam, optim.radam, dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1, decoupled_weight_decay=True)),
    (torch.optim.ASGD, optim.asgd, dict(lr=0.05, lambd=0.01, t0=3, weight_decay=0.1)),
    (torch.optim.Rprop, optim.rprop, dict(lr=0.05)),
    (torch.optim.Adafactor, optim.adafactor, dict(lr=0.05, weight_decay=0.1)),
]


@pytest.mark.parametrize(("torch_cls", "make", "kwargs"), SCHEDULED, ids=_ids(SCHEDULED))
def test_schedule_as_lr_matches_torch_lambdalr(x64, torch_cls, make, kwargs):
    params, a, b = _problem()
    base = kwargs["lr"]
    expected = run_torch_scheduled(torch_cls, kwargs, params, a, b)
    got = run_jaxnets(make, dict(kwargs, lr=lambda count: base * _factor(count)), params, a, b)
    _assert_same_trajectory(expected, got, params)
    if torch_cls is not torch.optim.Rprop:  # Rprop reads lr only once, so the schedule must change nothing else
        constant = run_jaxnets(make, kwargs, params, a, b)
        assert max(np.max(np.abs(constant[-1][k] - expected[-1][k])) for k in params) > 1e-6


# (torch class, jaxnets function, kwargs torch refuses with ValueError, jaxnets' message)
REFUSED = [
    (torch.optim.SGD, optim.sgd, dict(lr=-0.1), r"sgd got lr=-0.1; expected a value >= 0"),
    (torch.optim.Adam, optim.adam, dict(lr=-1e-3), r"adam got lr=-0.001"),
    (torch.optim.Adam, optim.adam, dict(betas=(0.9, 1.0)), r"adam got betas\[1\]=1.0; expected a value in \[0, 1\)"),
    (torch.optim.Adadelta, optim.adadelta, dict(lr=-1.0), r"adadelta got lr=-1.0"),
    (torch.optim.Adadelta, optim.adadelta, dict(rho=1.5), r"adadelta got rho=1.5; expected a value in \[0, 1\]"),
    (torch.optim.Adadelta, optim.adadelta, dict(eps=-1e-6), r"adadelta got eps=-1e-06; expected a value >= 0"),
    (torch.optim.Adadelta, optim.adadelta, dict(weight_decay=-0.1), r"adadelta got weight_decay=-0.1"),
    (torch.optim.Adamax, optim.adamax, dict(lr=-1.0), r"adamax got lr=-1.0"),
    (torch.optim.Adamax, optim.adamax, dict(eps=-1.0), r"adamax got eps=-1.0"),
    (torch.optim.Adamax, optim.adamax, dict(betas=(-0.1, 0.9)), r"adamax got betas\[0\]=-0.1"),
    (torch.optim.Adamax, optim.adamax, dict(weight_decay=-1.0), r"adamax got weight_decay=-1.0"),
    (torch.optim.NAdam, optim.nadam, dict(lr=-1.0), r"nadam got lr=-1.0"),
    (torch.optim.NAdam, optim.nadam, dict(betas=(0.9, 1.0)), r"nadam got betas\[1\]=1.0"),
    (torch.optim.NAdam, optim.nadam, dict(momentum_decay=-1e-3), r"nadam got momentum_decay=-0.001"),
    (torch.optim.NAdam, optim.nadam, dict(weight_decay=-1.0), r"nadam got weight_decay=-1.0"),
    (torch.optim.RAdam, optim.radam, dict(lr=-1.0), r"radam got lr=-1.0"),
    (torch.optim.RAdam, optim.radam, dict(eps=-1.0), r"radam got eps=-1.0"),
    (torch.optim.RAdam, optim.radam, dict(betas=(1.0, 0.9)), r"radam got betas\[0\]=1.0"),
    (torch.optim.ASGD, optim.asgd, dict(lr=-1.0), r"asgd got lr=-1.0"),
    (torch.optim.ASGD, optim.asgd, dict(weight_decay=-1.0), r"asgd got weight_decay=-1.0"),
    (torch.optim.Rprop, optim.rprop, dict(lr=-1.0), r"rprop got lr=-1.0"),
    (torch.optim.Rprop, optim.rprop, dict(etas=(1.0, 1.2)), r"rprop got etas=\(1.0, 1.2\); expected 0 < etaminus"),
    (torch.optim.Rprop, optim.rprop, dict(etas=(0.5, 1.0)), r"rprop got etas=\(0.5, 1.0\)"),
    (torch.optim.Rprop, optim.rprop, dict(etas=(0.0, 1.2)), r"rprop got etas=\(0.0, 1.2\)"),
    (torch.optim.Adafactor, optim.adafactor, dict(lr=-1.0), r"adafactor got lr=-1.0"),
    (torch.optim.Adafactor, optim.adafactor, dict(beta2_decay=0.8), r"adafactor got beta2_decay=0.8; expected .* <= 0"),
    (torch.optim.Adafactor, optim.adafactor, dict(eps=(-1e-30, 1e-3)), r"adafactor got eps\[0\]=-1e-30"),
    (torch.optim.Adafactor, optim.adafactor, dict(eps=(None, -1.0)), r"adafactor got eps\[1\]=-1.0"),
    (torch.optim.Adafactor, optim.adafactor, dict(d=0.0), r"adafactor got d=0.0; expected a clipping threshold >= 1"),
    (torch.optim.Adafactor, optim.adafactor, dict(weight_decay=-0.1), r"adafactor got weight_decay=-0.1"),
]


@pytest.mark.parametrize(
    ("torch_cls", "make", "kwargs", "message"),
    REFUSED,
    ids=[f"{c.__name__}-{next(iter(k))}-{i}" for i, (c, _, k, _) in enumerate(REFUSED)],
)
def test_refuses_what_torch_refuses(torch_cls, make, kwargs, message):
    with pytest.raises(ValueError):
        torch_cls([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


ALL = [optim.sgd, optim.adam, optim.adamw, optim.rmsprop, optim.adagrad]
ALL += [optim.adadelta, optim.adamax, optim.nadam, optim.radam, optim.asgd, optim.rprop, optim.adafactor]


@pytest.mark.parametrize("make", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("lr", ["0.1", None, [0.1], True])
def test_lr_that_is_neither_a_number_nor_a_schedule_is_refused(make, lr):
    with pytest.raises(ValueError, match=rf"{make.__name__} got lr=.*expected a number >= 0 or an optax schedule"):
        make(lr=lr)


@pytest.mark.parametrize("make", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("lr", [np.float64(0.01), np.array(0.01), jnp.float32(0.01), 1])
def test_lr_as_a_numpy_or_jax_scalar_or_int_is_accepted(make, lr):
    params = {"w": jnp.ones(2, jnp.float32)}
    tx = make(lr=lr)
    updates, _ = tx.update({"w": jnp.ones(2, jnp.float32)}, tx.init(params), params)
    assert updates["w"].dtype == jnp.float32


@pytest.mark.parametrize("make", ALL, ids=lambda f: f.__name__)
def test_nan_lr_is_refused(make):
    # Stricter than torch, whose `lr < 0` checks (SGD's, for one) let NaN through to NaN weights.
    with pytest.raises(ValueError, match=rf"{make.__name__} got lr=nan; expected a value >= 0"):
        make(lr=float("nan"))


@pytest.mark.parametrize("make", ALL, ids=lambda f: f.__name__)
def test_float32_params_stay_float32_under_x64_with_maximize_and_schedule(x64, make):
    params = {"w": jnp.ones((3, 2), jnp.float32) * 0.5, "b": jnp.full((2,), -0.25, jnp.float32)}
    grads = {"w": jnp.full((3, 2), 0.3, jnp.float32), "b": jnp.full((2,), -0.2, jnp.float32)}
    for tx in (make(maximize=True), make(lr=optax.exponential_decay(0.01, 1, 0.9))):
        state = tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        assert {v.dtype for v in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
        assert {v.dtype for v in jax.tree.leaves(updates)} == {jnp.dtype(jnp.float32)}
        floats = [v.dtype for v in jax.tree.leaves(state) if jnp.issubdtype(v.dtype, jnp.floating)]
        assert all(d == jnp.float32 for d in floats), floats


def _torch_state_after_steps(torch_cls, kwargs, params, a, b):
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    a = {k: torch.tensor(v) for k, v in a.items()}
    b = {k: torch.tensor(v) for k, v in b.items()}
    optimizer = torch_cls(list(p.values()), **kwargs)
    for _ in range(STEPS):
        optimizer.zero_grad()
        _loss(p, a, b, torch.sin).backward()
        optimizer.step()
    return {k: optimizer.state[v] for k, v in p.items()}


def _jaxnets_state_after_steps(tx, params, a, b):
    p = {k: jax.device_put(v) for k, v in params.items()}
    state = tx.init(p)
    for _ in range(STEPS):
        updates, state = tx.update(jax.grad(_loss)(p, a, b, jnp.sin), state, p)
        p = optax.apply_updates(p, updates)
    return state


def _close(have, want):
    want = want.detach().numpy()
    err = np.max(np.abs(np.asarray(have) - want)) / max(np.max(np.abs(want)), 1e-300)
    assert err <= RTOL, err


def test_asgd_averaged_params_are_torchs_ax(x64):
    params, a, b = _problem()
    kwargs = dict(lr=0.05, lambd=0.01, t0=4, weight_decay=0.1)
    want = _torch_state_after_steps(torch.optim.ASGD, kwargs, params, a, b)
    state = _jaxnets_state_after_steps(optim.asgd(**kwargs, maximize=True), params, a, b)
    want_max = _torch_state_after_steps(torch.optim.ASGD, dict(kwargs, maximize=True), params, a, b)
    ax = optim.asgd_averaged_params(state)
    for k in params:
        _close(ax[k], want_max[k]["ax"])
    state = _jaxnets_state_after_steps(optim.asgd(**kwargs), params, a, b)
    ax = optim.asgd_averaged_params(state)
    (inner,) = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optim.TorchASGDState))]
    assert isinstance(inner, optim.TorchASGDState)
    for k in params:
        _close(ax[k], want[k]["ax"])
        assert float(inner.eta) == float(want[k]["eta"])
        assert float(inner.mu) == float(want[k]["mu"])
        assert int(inner.step) == int(want[k]["step"])
    # Averaging started (t0=4 < 12 steps), so ax is not just the params.
    final = run_jaxnets(optim.asgd, kwargs, params, a, b)[-1]
    assert max(np.max(np.abs(final[k] - np.asarray(ax[k]))) for k in params) > 1e-4


def test_asgd_averaged_params_refuses_a_state_without_asgd():
    state = optim.sgd(0.1).init({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="found 0 TorchASGDState"):
        optim.asgd_averaged_params(state)


def test_nadam_state_is_torchs(x64):
    params, a, b = _problem()
    kwargs = dict(lr=0.05, weight_decay=0.1, momentum_decay=0.01)
    want = _torch_state_after_steps(torch.optim.NAdam, kwargs, params, a, b)
    (state,) = [
        s
        for s in jax.tree.leaves(
            _jaxnets_state_after_steps(optim.nadam(**kwargs), params, a, b),
            is_leaf=lambda x: isinstance(x, optim.TorchNAdamState),
        )
        if isinstance(s, optim.TorchNAdamState)
    ]
    for k in params:
        assert float(state.mu_product) == float(want[k]["mu_product"])
        _close(state.exp_avg[k], want[k]["exp_avg"])
        _close(state.exp_avg_sq[k], want[k]["exp_avg_sq"])


def test_rprop_state_is_torchs_and_a_sign_change_zeroes_the_gradient(x64):
    params, a, b = _problem()
    want = _torch_state_after_steps(torch.optim.Rprop, {}, params, a, b)
    state = _jaxnets_state_after_steps(optim.rprop(), params, a, b)
    for k in params:
        _close(state.step_size[k], want[k]["step_size"])
        _close(state.prev[k], want[k]["prev"])
    # The sign rule: after a sign change the stored gradient is 0 and the step size shrank.
    tx = optim.rprop(lr=0.1)
    p = {"w": jnp.zeros(2)}
    s = tx.init(p)
    _, s = tx.update({"w": jnp.array([1.0, 1.0])}, s, p)
    u, s = tx.update({"w": jnp.array([-1.0, 1.0])}, s, p)
    np.testing.assert_array_equal(np.asarray(u["w"]), [0.0, -0.12])
    np.testing.assert_array_equal(np.asarray(s.prev["w"]), [0.0, 1.0])
    np.testing.assert_allclose(np.asarray(s.step_size["w"]), [0.05, 0.12])


def test_adafactor_state_is_torchs_factored_rows_and_columns(x64):
    params, a, b = _problem()
    kwargs = dict(lr=0.05, weight_decay=0.1)
    want = _torch_state_after_steps(torch.optim.Adafactor, kwargs, params, a, b)
    state = _jaxnets_state_after_steps(optim.adafactor(**kwargs), params, a, b)
    (inner,) = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optim.TorchAdafactorState))
        if isinstance(s, optim.TorchAdafactorState)
    ]
    assert int(inner.step) == int(want["weight"]["step"]) == STEPS
    _close(inner.row_var["weight"], want["weight"]["row_var"])  # (3, 1), as torch's
    _close(inner.col_var["weight"], want["weight"]["col_var"])  # (1, 4)
    assert inner.row_var["weight"].shape == (3, 1) and inner.col_var["weight"].shape == (1, 4)
    for k in ("bias", "scale"):  # not factored: a full second moment
        _close(inner.variance[k], want[k]["variance"])
        assert "row_var" not in want[k]


def test_adafactor_refuses_complex_params():
    with pytest.raises(ValueError, match="adafactor got a complex parameter of dtype complex64"):
        optim.adafactor().init({"w": jnp.ones((2, 3), jnp.complex64)})


# Beyond torch's five LBFGS configurations: a short history that wraps, max_eval cutting the
# line search short, a loose tolerance_change that stops early, and a large lr the line search
# must bracket and zoom back from.
LBFGS_CASES = [
    dict(history_size=3, max_iter=7),
    dict(history_size=3, max_iter=7, line_search_fn="strong_wolfe"),
    dict(max_iter=10, max_eval=4, line_search_fn="strong_wolfe"),
    dict(lr=5.0, line_search_fn="strong_wolfe"),
    dict(lr=0.5, tolerance_change=1e-3),
]


@pytest.mark.parametrize("kwargs", LBFGS_CASES, ids=lambda k: "-".join(f"{a}={v}" for a, v in k.items()))
def test_lbfgs_options_match_torch(x64, kwargs):
    params, a, b = _problem()
    expected = run_torch(torch.optim.LBFGS, kwargs, params, a, b)
    _assert_same_trajectory(expected, run_jaxnets(optim.lbfgs, kwargs, params, a, b), params)


def test_lbfgs_state_counts_are_torchs(x64):
    params, a, b = _problem()
    kwargs = dict(history_size=3, max_iter=7, line_search_fn="strong_wolfe")
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    ta, tb = {k: torch.tensor(v) for k, v in a.items()}, {k: torch.tensor(v) for k, v in b.items()}
    opt = torch.optim.LBFGS(list(p.values()), **kwargs)

    def closure():
        opt.zero_grad()
        loss = _loss(p, ta, tb, torch.sin)
        loss.backward()
        return loss

    tx = optim.lbfgs(**kwargs)
    jp = {k: jax.device_put(v) for k, v in params.items()}
    state = tx.init(jp)
    value_and_grad = jax.value_and_grad(lambda q: _loss(q, a, b, jnp.sin))
    for _ in range(3):
        want_loss = float(opt.step(closure).detach())
        jp, state, loss = tx.step(jp, state, value_and_grad)
        assert abs(float(loss) - want_loss) <= RTOL * abs(want_loss)  # the loss before the step, as torch returns
        want = opt.state[p["weight"]]
        assert (state.func_evals, state.n_iter, len(state.old_dirs)) == (
            want["func_evals"],
            want["n_iter"],
            len(want["old_dirs"]),
        )
    assert len(state.old_dirs) == 3  # the history wrapped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(lr=-1.0), r"lbfgs got lr=-1.0; expected a value >= 0"),
        (dict(line_search_fn="armijo"), r"lbfgs got line_search_fn='armijo'; expected None or 'strong_wolfe'"),
        (dict(history_size=0), r"lbfgs got history_size=0; expected an integer >= 1"),
        (dict(max_iter=0), r"lbfgs got max_iter=0; expected an integer >= 1"),
        (dict(max_eval=0), r"lbfgs got max_eval=0; expected an integer >= 1 or None"),
        (dict(lr=lambda count: 0.1), r"lbfgs got a schedule as lr"),
    ],
    ids=["lr", "line_search_fn", "history_size", "max_iter", "max_eval", "schedule"],
)
def test_lbfgs_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optim.lbfgs(**kwargs)


def test_lbfgs_refuses_lr_torch_refuses():
    with pytest.raises(ValueError):
        torch.optim.LBFGS([torch.zeros(2, requires_grad=True)], lr=-1.0)


def _muon_problem():
    from test_optim_torch import MATRIX_SHAPES

    return _problem(MATRIX_SHAPES)


# Beyond torch's Muon configurations: no Nesterov, Moonshot's lr adjustment, and zero momentum.
MUON_CASES = [
    dict(lr=0.02, nesterov=False),
    dict(lr=0.02, adjust_lr_fn="match_rms_adamw", weight_decay=0.05),
    dict(lr=0.02, adjust_lr_fn="original", momentum=0.0, eps=1e-3),
]


@pytest.mark.parametrize("kwargs", MUON_CASES, ids=lambda k: "-".join(f"{a}={v}" for a, v in k.items()))
def test_muon_options_match_torch(x64, kwargs):
    params, a, b = _muon_problem()
    expected = run_torch(torch.optim.Muon, kwargs, params, a, b)
    got = run_jaxnets(optim.muon, dict(kwargs, layout="out_in"), params, a, b)
    _assert_same_trajectory(expected, got, params)


def test_muon_in_out_layout_is_torchs_step_on_transposed_kernels(x64):
    # torch's (out, in) weights as Flax (in, out) kernels: the same trajectory, transposed.
    params, a, b = _muon_problem()
    expected = run_torch(torch.optim.Muon, dict(lr=0.02), params, a, b)
    t, ta, tb = ({k: v.T for k, v in d.items()} for d in (params, a, b))
    got = run_jaxnets(optim.muon, dict(lr=0.02), t, ta, tb)
    _assert_same_trajectory(expected, [{k: v.T for k, v in g.items()} for g in got], params)
    # the layout matters: the tall (5, 2) weight gets sqrt(5 / 2) more lr in torch's reading
    wrong = run_jaxnets(optim.muon, dict(lr=0.02, layout="out_in"), t, ta, tb)
    assert np.max(np.abs(wrong[-1]["tall"].T - expected[-1]["tall"])) > 1e-4


def test_muon_schedule_as_lr_matches_torch_lambdalr(x64):
    params, a, b = _muon_problem()
    expected = run_torch_scheduled(torch.optim.Muon, dict(lr=0.02), params, a, b)
    got = run_jaxnets(optim.muon, dict(lr=lambda count: 0.02 * _factor(count), layout="out_in"), params, a, b)
    _assert_same_trajectory(expected, got, params)


def test_muon_refuses_non_2d_params_naming_them():
    torch_error = "Muon only supports 2D parameters"
    with pytest.raises(ValueError, match=torch_error):
        torch.optim.Muon([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=r"muon only supports 2-D parameters.*\['b'\] of shape \(2,\)"):
        optim.muon().init({"w": jnp.zeros((2, 3)), "b": jnp.zeros(2)})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(lr=-1.0), r"muon got lr=-1.0"),
        (dict(momentum=-0.1), r"muon got momentum=-0.1"),
        (dict(weight_decay=-0.1), r"muon got weight_decay=-0.1"),
        (dict(adjust_lr_fn="arbitrary"), r"muon got adjust_lr_fn='arbitrary'; expected None, 'original'"),
    ],
    ids=["lr", "momentum", "weight_decay", "adjust_lr_fn"],
)
def test_muon_refuses_what_torch_refuses(kwargs, message):
    with pytest.raises(ValueError):
        torch.optim.Muon([torch.zeros(2, 3, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=message):
        optim.muon(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(ns_steps=100), r"muon got ns_steps=100; expected an integer in \[0, 100\)"),
        (dict(ns_coefficients=(1.0, 2.0)), r"muon got ns_coefficients=\(1.0, 2.0\); expected three numbers"),
        (dict(layout="hwio"), r"muon got layout='hwio'; expected one of 'in_out'"),
    ],
    ids=["ns_steps", "ns_coefficients", "layout"],
)
def test_muon_refuses_at_construction_what_torch_refuses_at_its_first_step(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optim.muon(**kwargs)


def test_muon_float32_params_stay_float32_under_x64(x64):
    params = {"w": jnp.full((3, 2), 0.5, jnp.float32)}
    tx = optim.muon(lr=optax.exponential_decay(0.01, 1, 0.9))
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update({"w": jnp.full((3, 2), 0.3, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    assert params["w"].dtype == updates["w"].dtype == state.momentum_buffer["w"].dtype == jnp.float32
