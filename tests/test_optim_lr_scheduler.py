"""jaxnets.optim.lr_scheduler against torch.optim.lr_scheduler, value for value.

Each scheduler is driven in torch with a dummy optimizer (``optimizer.step()``
then ``scheduler.step()``) and the lr read from ``param_groups[0]["lr"]`` (and
``momentum`` / ``betas[0]``); the jaxnets schedule must give the same Python
floats. The tables are torch's own arithmetic replayed in Python floats, so
the comparison is exact (``assert_array_equal``), stricter than the float64
bound of 1e-12. Training runs compare whole trajectories in float64.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from tolerances import F64_ATOL, F64_RTOL

from jaxnets import optim
from jaxnets.optim import lr_scheduler as ls
from parity.schedulers import PLATEAU_CASES, halve_every_10, plateau_metrics, scheduler_cases, torch_lrs

T = torch.optim.lr_scheduler
EPOCHS = 80  # over 60 epochs, and past every configuration's natural end (T_max, total_iters, milestones)
TRAJECTORY_RTOL = 1e-10  # 12 float64 steps of a small model: the bound for trajectories


CASES = scheduler_cases(EPOCHS)  # shared with the schedule/... rows of python -m parity
IDS = [case[0] for case in CASES]
CYCLING = [case for case in CASES if case[0].startswith(("CyclicLR", "OneCycleLR"))]


def _torch_values(make, optimizer="sgd"):
    return torch_lrs(make, EPOCHS, optimizer=optimizer)


@pytest.mark.parametrize(("name", "make", "schedule"), CASES, ids=IDS)
def test_lr_sequence_is_torchs(name, make, schedule, x64):
    expected, _ = _torch_values(make)
    # the schedule called as an optimizer calls it, with a concrete count (past the table for ConstantLR & co.)
    got = np.array([float(schedule(jnp.int32(c))) for c in range(EPOCHS + 1)])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("name", "make", "schedule"), CYCLING, ids=[c[0] for c in CYCLING])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cycled_momentum_is_torchs(name, make, schedule, optimizer, x64):
    """torch writes SGD's momentum or Adam's betas[0]; schedule.momentum is that value."""
    expected_lr, expected_momentum = _torch_values(make, optimizer)
    np.testing.assert_array_equal(schedule.lrs[: EPOCHS + 1], expected_lr)
    if not schedule.cycle_momentum:
        assert schedule.momentum is None
        assert np.all(expected_momentum == (0.9 if optimizer == "sgd" else 0.9))
        return
    got = [float(schedule.momentum(c)) for c in range(EPOCHS + 1)]
    np.testing.assert_array_equal(got, expected_momentum)


def test_steps_per_epoch_steps_torch_once_per_epoch(x64):
    expected, _ = _torch_values(lambda o: T.CosineAnnealingLR(o, 12, 0.01))
    schedule = ls.CosineAnnealingLR(0.1, 12, 0.01, steps_per_epoch=7)
    got = [float(schedule(c)) for c in range(7 * EPOCHS)]
    np.testing.assert_array_equal(got, np.repeat(expected[:EPOCHS], 7))


def test_closed_forms_would_differ_from_torch():
    """Why tables: the closed forms torch documents differ from its recursive steps by rounding."""
    expected, _ = _torch_values(lambda o: T.CosineAnnealingLR(o, 25))
    closed = [0.1 * (1 + math.cos(math.pi * e / 25)) / 2 for e in range(EPOCHS + 1)]
    assert np.any(np.array(closed) != expected)
    np.testing.assert_allclose(closed, expected, rtol=1e-12, atol=1e-15)
    decay = optax.exponential_decay(0.1, 1, 0.95)
    with jax.enable_x64(True):  # the optimizer's int32 count makes optax compute in float32, even under x64
        optax_values = np.array([float(decay(jnp.int32(c))) for c in range(EPOCHS + 1)])
    expected, _ = _torch_values(lambda o: T.ExponentialLR(o, 0.95))
    assert np.max(np.abs(optax_values / expected - 1)) > 1e-7


def test_lambdas_are_called_on_python_ints():
    seen = []

    def lr_lambda(epoch):
        seen.append(type(epoch))
        return 0.9**epoch

    assert len(ls.LambdaLR(0.1, lr_lambda, horizon=5).lrs) == 6
    assert len(ls.MultiplicativeLR(0.1, lr_lambda, horizon=5).lrs) == 6
    assert set(seen) == {int} and len(seen) == 6 + 5


def test_schedule_under_jit_is_one_program_and_exact(x64, backend_compiles):
    schedule = ls.SequentialLR(
        [ls.LinearLR(0.1, 0.1, total_iters=5), ls.CosineAnnealingLR(0.1, 30)], [5], steps_per_epoch=3
    )
    counts = np.arange(3 * EPOCHS)
    got = jax.jit(jax.vmap(schedule))(counts)
    assert got.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(got), np.repeat(schedule.lrs[:EPOCHS], 3))
    assert len(backend_compiles) == 1


def test_past_the_table_refuses_or_stays_constant(x64):
    step = ls.StepLR(0.1, 3, horizon=20)
    assert float(step(20)) == step.lrs[20]
    with pytest.raises(ValueError, match=r"count=21.*table ends at step 20. Pass a larger `horizon=`"):
        step(21)
    traced = jax.jit(step)(jnp.array(21))
    assert np.isnan(traced)  # under jit a ValueError is impossible: NaN makes the loss NaN instead
    linear = ls.LinearLR(0.1, 0.2, total_iters=4)  # torch keeps the lr after total_iters
    expected, _ = _torch_values(lambda o: T.LinearLR(o, 0.2, total_iters=4))
    assert float(linear(10_000_000)) == expected[-1] == float(jax.jit(linear)(jnp.array(10**9)))
    one_cycle = ls.OneCycleLR(0.5, total_steps=10)
    with pytest.raises(ValueError, match="OneCycleLR raises past total_steps"):
        one_cycle(11)


def test_schedules_act_on_each_param_groups_base_lr(x64):
    """param_groups(schedule=...) scales each group's own lr, as torch's schedulers do."""
    params = {"fc1": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    tx = optim.param_groups(
        optim.sgd,
        [{"params": "*.bias", "lr": 0.3}, {"params": "*.weight"}],
        lr=0.1,
        schedule=lambda base_lr: ls.StepLR(base_lr, 2, 0.5),
    )
    state = tx.init(params)
    got_bias, got_kernel = [], []
    for _ in range(6):
        updates, state = tx.update(grads, state, params)
        got_bias.append(float(updates["fc1"]["bias"][0]) / -0.5)
        got_kernel.append(float(updates["fc1"]["kernel"][0, 0]) / -0.5)
    p = torch.nn.Parameter(torch.zeros(1))
    q = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.3}, {"params": [q]}], lr=0.1)
    scheduler = T.StepLR(opt, 2, 0.5)
    want_bias, want_kernel = [], []
    for _ in range(6):
        want_bias.append(opt.param_groups[0]["lr"])
        want_kernel.append(opt.param_groups[1]["lr"])
        opt.step()
        scheduler.step()
    np.testing.assert_allclose(got_bias, want_bias, rtol=F64_RTOL)
    np.testing.assert_allclose(got_kernel, want_kernel, rtol=F64_RTOL)


# --- ReduceLROnPlateau -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs", PLATEAU_CASES, ids=lambda k: "-".join(f"{a}={v}" for a, v in k.items()) or "defaults"
)
def test_reduce_lr_on_plateau_follows_torch(kwargs, x64):
    metrics = plateau_metrics(EPOCHS)
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.1)
    scheduler = T.ReduceLROnPlateau(opt, **kwargs)
    plateau = ls.ReduceLROnPlateau(0.1, **kwargs)
    state = plateau.wrap(optim.sgd).init({"w": jnp.zeros(1)})
    expected, got = [], []
    for metric in metrics:
        scheduler.step(metric)
        state = plateau.step(state, metric)
        expected.append(scheduler.get_last_lr()[0])
        got.append(float(plateau.get_last_lr(state)))
        assert int(state.num_bad_epochs) == scheduler.num_bad_epochs
        assert int(state.cooldown_counter) == scheduler.cooldown_counter
    assert len(set(expected)) > 1  # the lr was reduced at least once
    np.testing.assert_array_equal(got, expected)


def test_reduce_lr_on_plateau_step_runs_under_jit(x64, backend_compiles):
    plateau = ls.ReduceLROnPlateau(0.1, patience=1, cooldown=1)
    state = plateau.wrap(optim.sgd, momentum=0.9).init({"w": jnp.zeros(3)})
    step = jax.jit(plateau.step)
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.1)
    scheduler = T.ReduceLROnPlateau(opt, patience=1, cooldown=1)
    for metric in plateau_metrics(30, seed=1):
        state = step(state, jax.device_put(metric))
        scheduler.step(metric)
        assert float(state.lr) == scheduler.get_last_lr()[0]
    assert backend_compiles.count("jit(step)") == 1


# --- whole training runs -------------------------------------------------------------------------


def _problem():
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(4, 6)) * 0.5, rng.normal(size=6) * 0.1
    w2, b2 = rng.normal(size=(6, 1)) * 0.5, rng.normal(size=1) * 0.1
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 1))
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}, x, y


def _forward(p, x, lib):
    h = lib.tanh(x @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


def _run_torch(make_optimizer, make_scheduler, steps, per_epoch=1, metric=False):
    init, x, y = _problem()
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in init.items()}
    opt = make_optimizer(list(params.values()))
    scheduler = make_scheduler(opt)
    x, y = torch.tensor(x), torch.tensor(y)
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = torch.mean((_forward(params, x, torch) - y) ** 2)
        loss.backward()
        opt.step()
        if step % per_epoch == 0:
            scheduler.step(loss.item()) if metric else scheduler.step()
    return {k: v.detach().numpy().copy() for k, v in params.items()}


def _run_jax(tx, steps, plateau=None, per_epoch=1):
    init, x, y = _problem()
    params = {k: jax.device_put(v) for k, v in init.items()}
    state = tx.init(params)
    loss_and_grad = jax.value_and_grad(lambda p: jnp.mean((_forward(p, x, jnp) - y) ** 2))
    for step in range(1, steps + 1):
        loss, grads = loss_and_grad(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        if plateau is not None and step % per_epoch == 0:
            state = plateau.step(state, loss)
    return {k: np.asarray(v) for k, v in params.items()}


def _assert_same(got, expected):
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=TRAJECTORY_RTOL, atol=F64_ATOL, err_msg=key)


def test_sgd_with_step_lr_trains_as_torch(x64):
    expected = _run_torch(
        lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9, weight_decay=0.01),
        lambda o: T.StepLR(o, 2, 0.5),
        12,
        per_epoch=3,
    )
    schedule = ls.StepLR(0.3, 2, 0.5, steps_per_epoch=3)
    _assert_same(_run_jax(optim.sgd(lr=schedule, momentum=0.9, weight_decay=0.01), 12), expected)


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_sgd_with_one_cycle_and_cycled_momentum_trains_as_torch(nesterov, x64):
    expected = _run_torch(
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=nesterov),
        lambda o: T.OneCycleLR(o, 0.5, total_steps=12, three_phase=True),
        12,
    )
    schedule = ls.OneCycleLR(0.5, total_steps=12, three_phase=True)
    tx = optim.sgd(lr=schedule, momentum=schedule.momentum, nesterov=nesterov)
    _assert_same(_run_jax(tx, 12), expected)


def test_sgd_with_cyclic_lr_and_momentum_trains_as_torch(x64):
    expected = _run_torch(
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.05),
        lambda o: T.CyclicLR(o, 0.01, 0.3, 3, mode="triangular2", base_momentum=0.6, max_momentum=0.95),
        12,
    )
    schedule = ls.CyclicLR(0.01, 0.3, 3, mode="triangular2", base_momentum=0.6, max_momentum=0.95)
    tx = optim.sgd(lr=schedule, momentum=schedule.momentum, dampening=0.1, weight_decay=0.05)
    _assert_same(_run_jax(tx, 12), expected)


def test_cycled_momentum_matters():
    """The momentum schedule changes the trajectory: the tests above cannot pass with a fixed momentum."""
    with jax.enable_x64(True):
        schedule = ls.OneCycleLR(0.5, total_steps=12)
        cycled = _run_jax(optim.sgd(lr=schedule, momentum=schedule.momentum), 12)
        fixed = _run_jax(optim.sgd(lr=schedule, momentum=0.95), 12)
    assert np.max(np.abs(cycled["w1"] - fixed["w1"])) > 1e-4


def test_sgd_with_reduce_lr_on_plateau_trains_as_torch(x64):
    kwargs = dict(mode="min", factor=0.5, patience=0, threshold=0.2, cooldown=1)
    expected = _run_torch(
        lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.5), lambda o: T.ReduceLROnPlateau(o, **kwargs), 12,
        per_epoch=2, metric=True,
    )  # fmt: skip
    plateau = ls.ReduceLROnPlateau(0.2, **kwargs)
    got = _run_jax(plateau.wrap(optim.sgd, momentum=0.5), 12, plateau=plateau, per_epoch=2)
    _assert_same(got, expected)
    # and the lr did change: a run without the scheduler ends elsewhere
    plain = _run_jax(optim.sgd(lr=0.2, momentum=0.5), 12)
    assert np.max(np.abs(plain["w1"] - got["w1"])) > 1e-6


@pytest.mark.parametrize(
    ("torch_cls", "fn", "kwargs"),
    [
        (torch.optim.Adam, optim.adam, dict()),
        (torch.optim.Adam, optim.adam, dict(weight_decay=0.1, amsgrad=True)),
        (torch.optim.AdamW, optim.adamw, dict(weight_decay=0.1)),
    ],
    ids=["adam", "adam-amsgrad-l2", "adamw"],
)
def test_adam_with_one_cycle_and_cycled_beta1_trains_as_torch(torch_cls, fn, kwargs, x64):
    expected = _run_torch(
        lambda p: torch_cls(p, lr=0.01, betas=(0.9, 0.99), **kwargs),
        lambda o: T.OneCycleLR(o, 0.05, total_steps=12, pct_start=0.4),
        12,
    )
    schedule = ls.OneCycleLR(0.05, total_steps=12, pct_start=0.4)
    got = _run_jax(fn(lr=schedule, betas=(schedule.momentum, 0.99), **kwargs), 12)
    _assert_same(got, expected)
    fixed = _run_jax(fn(lr=schedule, betas=(0.95, 0.99), **kwargs), 12)
    assert np.max(np.abs(fixed["w1"] - got["w1"])) > 1e-6


def test_adam_with_lambda_lr_trains_as_torch(x64):
    expected = _run_torch(lambda p: torch.optim.Adam(p, lr=0.05), lambda o: T.LambdaLR(o, halve_every_10), 12)
    _assert_same(_run_jax(optim.adam(lr=ls.LambdaLR(0.05, halve_every_10)), 12), expected)


# --- bad input ---------------------------------------------------------------------------------

BAD = [
    (lambda: ls.StepLR(0.1, 0), r"StepLR: `step_size` got 0; expected an integer >= 1"),
    (lambda: ls.StepLR(0.1, 2.5), r"`step_size` got 2.5"),
    (lambda: ls.StepLR(-0.1, 3), r"StepLR got lr=-0.1; expected a base lr >= 0"),
    (lambda: ls.StepLR("0.1", 3), r"`lr` got '0.1' of type str; expected a number"),
    (lambda: ls.StepLR(0.1, 3, steps_per_epoch=0), r"`steps_per_epoch` got 0"),
    (lambda: ls.LambdaLR(0.1, [halve_every_10, halve_every_10]), r"list of 2 lambdas.*param_groups"),
    (lambda: ls.LambdaLR(0.1, 0.5), r"lr_lambda=0.5; expected a function of the epoch"),
    (lambda: ls.MultiStepLR(0.1, 30), r"milestones=30; expected a list of epochs"),
    (lambda: ls.ConstantLR(0.1, factor=1.5), r"factor=1.5; expected a multiplicative factor in \[0, 1\]"),
    (lambda: ls.ConstantLR(0.1, factor=0.0), r"factor=0; torch then divides by zero"),
    (lambda: ls.LinearLR(0.1, start_factor=0.0), r"start_factor=0.0; expected a multiplicative factor in \(0, 1\]"),
    (lambda: ls.LinearLR(0.1, end_factor=2.0), r"end_factor=2.0"),
    (lambda: ls.CosineAnnealingLR(0.1, 0), r"`T_max` got 0"),
    (lambda: ls.CosineAnnealingWarmRestarts(0.1, 10, T_mult=0), r"`T_mult` got 0"),
    (lambda: ls.CyclicLR(0.01, 0.1, mode="sawtooth"), r"mode='sawtooth' and no scale_fn"),
    (lambda: ls.OneCycleLR(0.1), r"OneCycleLR needs total_steps, or epochs and steps_per_epoch"),
    (lambda: ls.OneCycleLR(0.1, total_steps=10, pct_start=1), r"pct_start=1; expected a float in \[0, 1\]"),
    (lambda: ls.OneCycleLR(0.1, total_steps=10, anneal_strategy="exp"), r"anneal_strategy='exp'"),
    (lambda: ls.SequentialLR([ls.StepLR(0.1, 2)], [3]), r"1 schedulers and 1 milestones; expected one milestone fewer"),
    (lambda: ls.SequentialLR([], []), r"expected a non-empty list"),
    (lambda: ls.SequentialLR([ls.StepLR(0.1, 2), ls.StepLR(0.2, 2)], [3]), r"different base lrs"),
    (lambda: ls.ChainedScheduler([ls.StepLR(0.1, 2), lambda c: 0.1]), r"at index 1; expected a jaxnets"),
    (lambda: ls.ChainedScheduler([ls.ReduceLROnPlateau(0.1)]), r"does not support ReduceLROnPlateau"),
    (
        lambda: ls.SequentialLR([ls.StepLR(0.1, 2, steps_per_epoch=4), ls.StepLR(0.1, 2)], [3]),
        r"steps_per_epoch=4; give steps_per_epoch to SequentialLR",
    ),
    (lambda: optim.sgd(momentum=ls.OneCycleLR(0.1, 10, cycle_momentum=False).momentum), r"momentum=None"),
    (lambda: optim.nadam(betas=(ls.OneCycleLR(0.1, 10).momentum, 0.99)), r"only adam and adamw take a cycled"),
    (lambda: ls.ReduceLROnPlateau(0.1, factor=1.0), r"factor=1.0; expected < 1.0"),
    (lambda: ls.ReduceLROnPlateau(0.1, mode="down"), r"mode='down'; expected 'min'"),
    (lambda: ls.ReduceLROnPlateau(0.1, threshold_mode="pct"), r"threshold_mode='pct'"),
    (lambda: ls.ReduceLROnPlateau(0.1).wrap(optim.sgd(0.1)), r"expected an optimizer function"),
    (lambda: ls.ReduceLROnPlateau(0.1).wrap(optim.sgd, lr=0.2), r"got `lr`"),
    (lambda: ls.ReduceLROnPlateau(0.1).step({"lr": 0.1}, 1.0), r"got a dict; expected the state"),
]


@pytest.mark.parametrize(("build", "message"), BAD, ids=[re.sub(r"\W+", "-", m)[:40] for _, m in BAD])
def test_bad_arguments_are_refused_clearly(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_torch_refuses_what_is_refused():
    """The refusals that mirror torch's own checks: torch raises on the same arguments."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for build in (
        lambda: T.ConstantLR(opt, factor=1.5),
        lambda: T.LinearLR(opt, start_factor=0.0),
        lambda: T.CyclicLR(opt, 0.01, 0.1, mode="sawtooth"),
        lambda: T.OneCycleLR(opt, 0.1),
        lambda: T.OneCycleLR(opt, 0.1, total_steps=10, pct_start=1),
        lambda: T.ReduceLROnPlateau(opt, factor=1.0),
        lambda: T.CosineAnnealingWarmRestarts(opt, 10, T_mult=0),
    ):
        with pytest.raises(ValueError):
            build()


def test_docs_example_runs_and_prints_torch_numbers(capsys):
    from test_readme import _python_blocks, _section

    section = _section("docs/optimizers.md", "Learning-rate schedulers")
    (block,) = _python_blocks(section)
    shown = re.search(r"runs it beside torch\):\n\n```\n(.*?)```", section, flags=re.S).group(1)
    with jax.enable_x64(True):
        exec(compile(block, "docs/optimizers.md (lr_scheduler)", "exec"), {})
    printed = capsys.readouterr().out
    assert printed == shown
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    scheduler = T.SequentialLR(opt, [T.LinearLR(opt, 0.1, total_iters=3), T.CosineAnnealingLR(opt, 7)], [3])
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert printed.split("\n")[0] == " ".join(f"{lr:.6f}" for lr in lrs)


def test_table_ends_where_torch_fails(x64):
    """triangular2 overflows 2.0 ** (cycle - 1) in torch too; a lambda may leave the reals: the table ends there."""
    schedule = ls.CyclicLR(0.01, 0.1, 2, mode="triangular2", horizon=5000)
    n = len(schedule.lrs)
    assert n < 5001
    with pytest.raises(ValueError, match=rf"table ends at step {n - 1}.*fails at step {n} too: OverflowError"):
        schedule(n)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    scheduler = T.CyclicLR(opt, 0.01, 0.1, 2, mode="triangular2")
    for _ in range(n - 1):
        opt.step()
        scheduler.step()
    with pytest.raises(OverflowError):
        scheduler.step()
    poly = ls.LambdaLR(0.1, lambda e: (1 - e / 90) ** 0.9)
    assert len(poly.lrs) == 91
    with pytest.raises(ValueError, match=r"fails at step 91 too: TypeError: the lr became \("):
        poly(91)
