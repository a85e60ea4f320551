"""parity.optimizer_state_from_torch / load_optimizer_state_into_torch with a scheduler, RMSprop and LBFGS.

Each test runs torch for K steps, moves the optimizer state (and the
scheduler's position) into jaxnets, continues there for K steps and compares
with an uninterrupted torch run (its steps K+1 to 2K); then moves the state back
into a fresh torch optimizer and scheduler, continues for K steps and compares
with the uninterrupted run's steps 2K+1 to 3K. float64, 1e-12.
"""

import copy

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from test_parity_convert import _BiasFree, _TorchBiasFree, jax_input, pairs
from tolerances import F64_ATOL, F64_RTOL

import jaxnets
import parity
from jaxnets.optim import lr_scheduler as ls
from parity import precision

torch.set_num_threads(1)
K = 3
LBFGS_RTOL = 1e-10  # several inner iterations a step compound their roundings (tests/test_optim_torch.py's bound)
T = torch.optim.lr_scheduler
OPT = torch.optim
J = jaxnets.optim

# name -> (base lr, torch optimizer of (params, lr), jaxnets optimizer of lr); the lr follows StepLR(2, 0.5),
# stepped after every optimizer step, so it changes within each part of the run.
SCHEDULED = {
    "sgd-momentum": (1e-2, lambda p, lr: OPT.SGD(p, lr=lr, momentum=0.9), lambda lr: J.sgd(lr, 0.9)),
    "sgd-nesterov-wd": (
        1e-2,
        lambda p, lr: OPT.SGD(p, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.1),
        lambda lr: J.sgd(lr, 0.9, nesterov=True, weight_decay=0.1),
    ),
    "sgd-dampening": (
        1e-2,
        lambda p, lr: OPT.SGD(p, lr=lr, momentum=0.9, dampening=0.5),
        lambda lr: J.sgd(lr, 0.9, dampening=0.5),
    ),
    "adam-amsgrad": (1e-2, lambda p, lr: OPT.Adam(p, lr=lr, amsgrad=True), lambda lr: J.adam(lr, amsgrad=True)),
    "adamw": (1e-2, lambda p, lr: OPT.AdamW(p, lr=lr), lambda lr: J.adamw(lr)),
    "rmsprop": (1e-2, lambda p, lr: OPT.RMSprop(p, lr=lr), lambda lr: J.rmsprop(lr)),
    "rmsprop-centered-momentum": (
        1e-2,
        lambda p, lr: OPT.RMSprop(p, lr=lr, centered=True, momentum=0.9),
        lambda lr: J.rmsprop(lr, centered=True, momentum=0.9),
    ),
    "adagrad": (1e-2, lambda p, lr: OPT.Adagrad(p, lr=lr, lr_decay=0.1), lambda lr: J.adagrad(lr, lr_decay=0.1)),
    "adadelta": (0.5, lambda p, lr: OPT.Adadelta(p, lr=lr), lambda lr: J.adadelta(lr)),
    "adamax": (1e-2, lambda p, lr: OPT.Adamax(p, lr=lr), lambda lr: J.adamax(lr)),
    "nadam": (1e-2, lambda p, lr: OPT.NAdam(p, lr=lr), lambda lr: J.nadam(lr)),
    "radam": (1e-2, lambda p, lr: OPT.RAdam(p, lr=lr), lambda lr: J.radam(lr)),
    "asgd": (1e-2, lambda p, lr: OPT.ASGD(p, lr=lr, t0=2), lambda lr: J.asgd(lr, t0=2)),
    "rprop": (1e-2, lambda p, lr: OPT.Rprop(p, lr=lr), lambda lr: J.rprop(lr)),
    "adafactor": (1e-2, lambda p, lr: OPT.Adafactor(p, lr=lr), lambda lr: J.adafactor(lr)),
    "muon": (2e-2, lambda p, lr: OPT.Muon(p, lr=lr), lambda lr: J.muon(lr, layout="in_out")),
}


def _torch_steps(model, opt, scheduler, x, y, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses


def _jax_continues(trainer, x, y, ref_losses, ref_weights):
    """jaxnets' K steps from the converted state are the uninterrupted torch run's steps K+1 to 2K."""
    xj, yj = jax_input(x), jax.device_put(y.numpy())
    jax_losses = [float(trainer.step(xj, yj)) for _ in range(K)]
    np.testing.assert_allclose(jax_losses, ref_losses[K : 2 * K], rtol=F64_RTOL)
    for key, value in parity.to_torch_state_dict(trainer.params).items():
        np.testing.assert_allclose(value, ref_weights[key], rtol=F64_RTOL, atol=F64_ATOL, err_msg=key)


def _torch_continues(torch_losses, torch_model, ref_losses, reference):
    """torch's K steps from the state moved back are the uninterrupted run's steps 2K+1 to 3K."""
    np.testing.assert_allclose(torch_losses, ref_losses[2 * K :], rtol=F64_RTOL)
    for key, value in reference.state_dict().items():
        np.testing.assert_allclose(torch_model.state_dict()[key], value, rtol=F64_RTOL, atol=F64_ATOL, err_msg=key)


def _models(name):
    if name == "muon":  # torch's Muon takes 2-D parameters only
        torch.manual_seed(0)
        return _TorchBiasFree().double(), _BiasFree(nnx.Rngs(0)), torch.randn(4, 6, dtype=torch.float64)
    return pairs()["two_layer"]


def _step_lr(opt):
    return T.StepLR(opt, 2, 0.5)


ONE_CYCLE = dict(total_steps=4 * K, pct_start=0.4)
# OneCycleLR stepped per batch, cycling SGD's momentum or Adam's beta1: the position sets both
CYCLED = {
    "sgd-onecycle-momentum": (
        0.1,
        lambda p, lr: OPT.SGD(p, lr=lr, momentum=0.9),
        lambda s: J.sgd(s, momentum=s.momentum),
    ),
    "adam-onecycle-beta1": (
        0.05,
        lambda p, lr: OPT.Adam(p, lr=lr, betas=(0.9, 0.99)),
        lambda s: J.adam(s, betas=(s.momentum, 0.99)),
    ),
}
CASES = [(n, *SCHEDULED[n], _step_lr, lambda lr: ls.StepLR(lr, 2, 0.5)) for n in SCHEDULED] + [
    (
        n,
        *CYCLED[n],
        lambda o, lr=CYCLED[n][0]: T.OneCycleLR(o, lr, **ONE_CYCLE),
        lambda lr: ls.OneCycleLR(lr, **ONE_CYCLE),
    )
    for n in CYCLED
]


@pytest.mark.parametrize(
    ("name", "lr", "make_torch", "make_jax", "torch_scheduler", "schedule"), CASES, ids=[c[0] for c in CASES]
)
def test_a_scheduled_torch_run_continues_in_jax_and_back(
    x64, name, lr, make_torch, make_jax, torch_scheduler, schedule
):
    torch_model, jax_model, x = _models(name)
    y = torch.randn(x.shape[0], 3, dtype=torch.float64)
    reference = copy.deepcopy(torch_model)
    ref_opt = make_torch(reference.parameters(), lr)
    ref_scheduler = torch_scheduler(ref_opt)
    ref_losses = _torch_steps(reference, ref_opt, ref_scheduler, x, y, 2 * K)
    ref_weights = {k: v.clone() for k, v in reference.state_dict().items()}
    ref_group = dict(ref_opt.param_groups[0])
    ref_losses += _torch_steps(reference, ref_opt, ref_scheduler, x, y, K)

    opt = make_torch(torch_model.parameters(), lr)
    _torch_steps(torch_model, opt, torch_scheduler(opt), x, y, K)
    # torch -> JAX after K steps; SGD and Muon keep no step count, so steps=K gives the schedule's position
    parity.load_torch_state_dict(jax_model, torch_model.state_dict())
    tx = make_jax(schedule(lr))
    trainer = jaxnets.Trainer(jax_model, tx, lambda m, x, y: jaxnets.losses.mse_loss(m(x), y))
    trainer.opt_state = parity.optimizer_state_from_torch(opt, torch_model, trainer.opt_state, steps=K)
    _jax_continues(trainer, x, y, ref_losses, ref_weights)
    # JAX -> torch after 2K steps: a fresh optimizer and scheduler pick up where JAX is
    torch_model.load_state_dict(parity.to_torch_state_dict(trainer.params))
    opt = make_torch(torch_model.parameters(), lr)
    scheduler = torch_scheduler(opt)
    parity.load_optimizer_state_into_torch(trainer.opt_state, opt, torch_model, scheduler=scheduler)
    assert scheduler.last_epoch == 2 * K
    for key in ("lr", "momentum", "betas"):  # the lr and the cycled momentum where the uninterrupted run has them
        assert opt.param_groups[0].get(key) == ref_group.get(key), key
    torch_losses = _torch_steps(torch_model, opt, scheduler, x, y, K)
    _torch_continues(torch_losses, torch_model, ref_losses, reference)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_state_continues_a_torch_run_in_jax_and_back(x64, line_search_fn):
    """LBFGSState's flat vectors go through the layout table: LeNet's kernels and fc1 permutation included."""
    torch_model, jax_model, x = pairs()["lenet"]
    target = torch.arange(1.0, 11.0, dtype=torch.float64).expand(x.shape[0], 10)
    options = dict(lr=0.5, max_iter=4, history_size=3, line_search_fn=line_search_fn)
    reference = copy.deepcopy(torch_model)

    def torch_steps(model, opt, steps):
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), target)
            loss.backward()
            return loss

        return [float(opt.step(closure).detach()) for _ in range(steps)]

    ref_opt = OPT.LBFGS(reference.parameters(), **options)
    ref_losses = torch_steps(reference, ref_opt, 2 * K)
    ref_weights = {k: v.clone() for k, v in reference.state_dict().items()}
    ref_losses += torch_steps(reference, ref_opt, K)

    opt = OPT.LBFGS(torch_model.parameters(), **options)
    torch_steps(torch_model, opt, K)
    parity.load_torch_state_dict(jax_model, torch_model.state_dict())
    graphdef, params = nnx.split(jax_model, nnx.Param)
    xj, tj = jax_input(x), jax.device_put(target.numpy())
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: jaxnets.losses.mse_loss(nnx.merge(graphdef, p)(xj), tj)))
    tx = J.lbfgs(**options)
    state = parity.optimizer_state_from_torch(opt, torch_model, tx.init(params), params=params)
    assert state.n_iter == opt.state[next(iter(torch_model.parameters()))]["n_iter"] > K and len(state.old_dirs) == 3
    losses = []
    for _ in range(K):
        params, state, loss = tx.step(params, state, value_and_grad)
        losses.append(float(loss))
    np.testing.assert_allclose(losses, ref_losses[K : 2 * K], rtol=LBFGS_RTOL)
    for key, value in parity.to_torch_state_dict(params).items():  # norm-wise, as the parity rows measure
        assert precision.errors(value, ref_weights[key])[1] < LBFGS_RTOL, key
    torch_model.load_state_dict(parity.to_torch_state_dict(params))
    opt = OPT.LBFGS(torch_model.parameters(), **options)
    parity.load_optimizer_state_into_torch(state, opt, torch_model, params=params)
    np.testing.assert_allclose(torch_steps(torch_model, opt, K), ref_losses[2 * K :], rtol=LBFGS_RTOL)
    for key, value in reference.state_dict().items():
        assert precision.errors(torch_model.state_dict()[key], value)[1] < LBFGS_RTOL, key


def test_lbfgs_state_needs_params_and_an_lbfgs(x64):
    torch_model, jax_model, _ = pairs()["two_layer"]
    params = nnx.state(jax_model, nnx.Param)
    state = J.lbfgs().init(params)
    with pytest.raises(ValueError, match=r"LBFGS state needs params="):
        parity.optimizer_state_from_torch(OPT.LBFGS(torch_model.parameters()), torch_model, state)
    with pytest.raises(ValueError, match=r"goes into torch.optim.LBFGS; got SGD"):
        parity.load_optimizer_state_into_torch(state, OPT.SGD(torch_model.parameters()), torch_model, params=params)


# -- parameter groups: torch's param_groups <-> jaxnets.optim.param_groups ----------------------------------------

# name -> (torch optimizer class, jaxnets optimizer, defaults, weights' group options, biases' group options, schedule)
# Weights take weight decay; biases none and another lr, as the classic recipe. The schedule (StepLR(2, 0.5), stepped
# after every optimizer step) acts on each group's own lr.
GROUPED = {
    "sgd-momentum": (OPT.SGD, J.sgd, dict(lr=1e-2, momentum=0.9), dict(weight_decay=1e-2), dict(lr=3e-2), False),
    "adam": (OPT.Adam, J.adam, dict(lr=1e-2), dict(weight_decay=1e-2), dict(lr=3e-3), False),
    "adamw": (OPT.AdamW, J.adamw, dict(lr=1e-2), dict(weight_decay=5e-2), dict(lr=3e-3, weight_decay=0.0), False),
    "rmsprop-momentum": (
        OPT.RMSprop,
        J.rmsprop,
        dict(lr=1e-3, momentum=0.9),
        dict(weight_decay=1e-2),
        dict(lr=3e-3),
        False,
    ),  # optax's trace is -lr * torch's buffer: each group's own lr
    "adam-steplr": (OPT.Adam, J.adam, dict(lr=1e-2), dict(weight_decay=1e-2), dict(lr=3e-3), True),
    "rmsprop-momentum-steplr": (
        OPT.RMSprop,
        J.rmsprop,
        dict(lr=1e-3, momentum=0.9),
        dict(weight_decay=1e-2),
        dict(lr=3e-3),
        True,
    ),
}


def _grouped_torch(torch_cls, model, defaults, weights, biases, frozen=()):
    named = [(n, p) for n, p in model.named_parameters() if n not in frozen]
    return torch_cls(
        [
            {"params": [p for n, p in named if n.endswith("weight")], **weights},
            {"params": [p for n, p in named if n.endswith("bias")], **biases},
        ],
        **defaults,
    )


def _grouped_jax(jax_fn, defaults, weights, biases, scheduled, frozen=()):
    schedule = (lambda base_lr: ls.StepLR(base_lr, 2, 0.5)) if scheduled else None
    keep = lambda suffix: lambda n, v: n.endswith(suffix) and n not in frozen  # noqa: E731
    return J.param_groups(
        jax_fn,
        [{"params": keep("weight"), **weights}, {"params": keep("bias"), **biases}],
        schedule=schedule,
        **defaults,
    )


@pytest.mark.parametrize("frozen", [(), ("fc3.weight", "fc3.bias")], ids=["all", "fc3-frozen"])
@pytest.mark.parametrize("name", list(GROUPED))
def test_param_groups_state_continues_a_torch_run_in_jax_and_back(x64, name, frozen):
    """LeNet (kernels, fc1's flatten permutation), two torch groups with their own lr and weight decay.

    torch K steps -> jaxnets K -> torch K equals one torch run of 3K steps. With fc3 frozen (in no group,
    as torch's optimizer never sees it), no group's state has its shape: params= gives it.
    """
    torch_cls, jax_fn, defaults, weights, biases, scheduled = GROUPED[name]
    torch_model, jax_model, x = pairs()["lenet"]
    y = torch.randn(x.shape[0], 10, dtype=torch.float64)
    sched = (lambda o: T.StepLR(o, 2, 0.5)) if scheduled else (lambda o: None)
    reference = copy.deepcopy(torch_model)
    ref_opt = _grouped_torch(torch_cls, reference, defaults, weights, biases, frozen)
    ref_scheduler = sched(ref_opt)
    ref_losses = _torch_steps(reference, ref_opt, ref_scheduler, x, y, 2 * K)
    ref_weights = {k: v.clone() for k, v in reference.state_dict().items()}
    ref_lrs = [group["lr"] for group in ref_opt.param_groups]
    ref_losses += _torch_steps(reference, ref_opt, ref_scheduler, x, y, K)

    opt = _grouped_torch(torch_cls, torch_model, defaults, weights, biases, frozen)
    _torch_steps(torch_model, opt, sched(opt), x, y, K)
    parity.load_torch_state_dict(jax_model, torch_model.state_dict())
    tx = _grouped_jax(jax_fn, defaults, weights, biases, scheduled, frozen)
    trainer = jaxnets.Trainer(jax_model, tx, lambda m, x, y: jaxnets.losses.mse_loss(m(x), y))
    params = trainer.params if frozen else None
    trainer.opt_state = parity.optimizer_state_from_torch(opt, torch_model, trainer.opt_state, params=params)
    _jax_continues(trainer, x, y, ref_losses, ref_weights)

    torch_model.load_state_dict(parity.to_torch_state_dict(trainer.params))
    opt = _grouped_torch(torch_cls, torch_model, defaults, weights, biases, frozen)
    scheduler = sched(opt)
    parity.load_optimizer_state_into_torch(trainer.opt_state, opt, torch_model, scheduler=scheduler, params=params)
    assert [group["lr"] for group in opt.param_groups] == ref_lrs  # each group's lr, replayed by the scheduler
    torch_losses = _torch_steps(torch_model, opt, scheduler, x, y, K)
    _torch_continues(torch_losses, torch_model, ref_losses, reference)


def test_param_groups_that_differ_are_refused_with_what_differs(x64):
    torch_model, jax_model, _ = pairs()["lenet"]
    params = nnx.state(jax_model, nnx.Param)
    defaults, weights, biases = dict(lr=1e-2), dict(weight_decay=1e-2), dict(lr=3e-3)
    state = _grouped_jax(J.adam, defaults, weights, biases, False).init(params)
    one_group = OPT.Adam(torch_model.parameters(), lr=1e-2)
    for call in (
        lambda: parity.optimizer_state_from_torch(one_group, torch_model, state),
        lambda: parity.load_optimizer_state_into_torch(state, one_group, torch_model),
    ):
        with pytest.raises(ValueError, match=r"has 2 parameter groups \(group0, group1\), the torch optimizer 1"):
            call()
    # fc3.weight in torch's bias group, not in its weight group
    named = dict(torch_model.named_parameters())
    moved = OPT.Adam(
        [
            {"params": [p for n, p in named.items() if n.endswith("weight") and n != "fc3.weight"]},
            {"params": [p for n, p in named.items() if n.endswith("bias") or n == "fc3.weight"]},
        ],
        lr=1e-2,
    )
    message = (
        r"group0: torch's group holds nothing more that jaxnets' does not; jaxnets' holds fc3.weight that torch's "
        r"does not; group1: torch's group holds fc3.weight that jaxnets' does not"
    )
    with pytest.raises(ValueError, match=message):
        parity.optimizer_state_from_torch(moved, torch_model, state)
    with pytest.raises(ValueError, match=message):
        parity.load_optimizer_state_into_torch(state, moved, torch_model)
    # a frozen parameter's shape is in no group's state: params= gives it
    frozen = ("fc3.weight", "fc3.bias")
    state = _grouped_jax(J.adam, defaults, weights, biases, False, frozen).init(params)
    opt = _grouped_torch(OPT.Adam, torch_model, defaults, weights, biases, frozen)
    with pytest.raises(ValueError, match=r"shape of fc3/bias, which no parameter group's state holds.*params="):
        parity.optimizer_state_from_torch(opt, torch_model, state)
    state = J.param_groups(J.adafactor, [{"params": "*.weight"}, {"params": "*.bias"}]).init(params)
    opt = _grouped_torch(OPT.Adafactor, torch_model, {}, {}, {})
    with pytest.raises(TypeError, match=r"Adafactor state under jaxnets.optim.param_groups"):
        parity.optimizer_state_from_torch(opt, torch_model, state)
