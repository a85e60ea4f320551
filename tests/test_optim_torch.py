"""jaxnets.optim against torch.optim, on torch's own optimizer test configurations.

torch lists, for each optimizer, the configurations its own tests run
(``torch.testing._internal.common_optimizers.optim_db``, each entry's
``optim_inputs_func``). Every configuration of every optimizer jaxnets has runs
here for :data:`STEPS` steps in float64 from the same parameters. Each side
takes the gradient of the same loss at its own parameters, so a difference in
one step feeds into the next, and the weights must agree within
:data:`RTOL` relative at every step.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.testing._internal import common_optimizers

from jaxnets import optim

STEPS = 12
# A few roundings per step in float64 (about 1e-16 each), compounded over 12 steps of
# an optimizer that divides by running moments: 1e-10 leaves three orders of magnitude
# and still catches any real difference (a dropped term moves the weights by > 1e-4).
RTOL = 1e-10

# torch.optim class name -> the jaxnets.optim function that takes the same steps.
JAXNETS = {
    "Adagrad": optim.adagrad,
    "Adam": optim.adam,
    "AdamW": optim.adamw,
    "RMSprop": optim.rmsprop,
    "SGD": optim.sgd,
    "Adadelta": optim.adadelta,
    "Adamax": optim.adamax,
    "NAdam": optim.nadam,
    "RAdam": optim.radam,
    "ASGD": optim.asgd,
    "Rprop": optim.rprop,
    "Adafactor": optim.adafactor,
    "LBFGS": optim.lbfgs,
    # The arrays here are in torch's (out, in) layout, which Muon's lr adjustment reads.
    "Muon": functools.partial(optim.muon, layout="out_in"),
}
# torch optimizers jaxnets does not port, and why.
NOT_PORTED = {
    "SparseAdam": "JAX has no sparse gradients, so SparseAdam's lazy update (only the rows a gradient touches) "
    "cannot be matched",
}
# Options torch's configurations use that jaxnets does not have yet (#14): those configurations must fail.
PENDING = set()
# torch's switches that choose an implementation, not the math (none appear for the CPU today).
IMPLEMENTATION = {"foreach", "fused", "capturable", "differentiable"}

# A weight (torch's (out, in) layout; the loss treats every array alike), a bias and a
# scalar, so that every optimizer meets a 2-D, a 1-D and a 0-D parameter.
SHAPES = {"weight": (3, 4), "bias": (3,), "scale": ()}
# Muon takes 2-D parameters only (torch refuses others): a wide and a tall one, so its
# Newton-Schulz transposition and its lr adjustment sqrt(max(1, out / in)) both act.
MATRIX_SHAPES = {"weight": (3, 4), "tall": (5, 2)}


def _problem(shapes=None):
    """Starting parameters and the fixed coefficients of the loss, as float64 NumPy arrays."""
    shapes = SHAPES if shapes is None else shapes
    rng = np.random.default_rng(0)
    params = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    a = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    b = {name: rng.uniform(0.5, 1.5, size=shape) for name, shape in shapes.items()}
    return params, a, b


def _loss(p, a, b, sin):
    """``sum(a * sin(p) + b * p**2 / 2)`` over every array: smooth, not quadratic, gradients of either sign."""
    return sum((a[k] * sin(p[k]) + 0.5 * b[k] * p[k] ** 2).sum() for k in p)


def _configs():
    for entry in common_optimizers.optim_db:
        name = entry.optim_cls.__name__
        if name not in JAXNETS:
            continue
        for config in entry.optim_inputs_func(device="cpu", dtype=torch.float64):
            marks = ()
            pending = PENDING & set(config.kwargs)
            if pending:
                marks = pytest.mark.xfail(strict=True, reason=f"#14: jaxnets.optim has no {sorted(pending)} yet")
            yield pytest.param(entry.optim_cls, config.kwargs, id=f"{name}-{config.desc}", marks=marks)


def _jaxnets_kwargs(kwargs):
    """torch's keyword arguments as jaxnets takes them: a tensor lr is a NumPy scalar of its dtype."""
    assert not IMPLEMENTATION & set(kwargs), kwargs
    return {k: v.numpy()[()] if torch.is_tensor(v) else v for k, v in kwargs.items()}


def run_torch(optim_cls, kwargs, params, a, b):
    """The weights after each of :data:`STEPS` torch steps."""
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    a = {k: torch.tensor(v) for k, v in a.items()}
    b = {k: torch.tensor(v) for k, v in b.items()}
    optimizer = optim_cls(list(p.values()), **kwargs)

    def closure():
        optimizer.zero_grad()
        loss = _loss(p, a, b, torch.sin)
        loss.backward()
        return loss

    history = []
    for _ in range(STEPS):
        optimizer.step(closure)
        history.append({k: v.detach().numpy().copy() for k, v in p.items()})
    return history


def run_jaxnets(make, kwargs, params, a, b):
    """The weights after each of :data:`STEPS` jaxnets steps, every step compiled."""
    tx = make(**_jaxnets_kwargs(kwargs))
    p = {k: jax.device_put(v) for k, v in params.items()}
    if isinstance(tx, optim.LBFGS):  # torch's step(closure): the step calls the loss itself
        value_and_grad = jax.jit(jax.value_and_grad(lambda p: _loss(p, a, b, jnp.sin)))
        state, history = tx.init(p), []
        for _ in range(STEPS):
            p, state, _ = tx.step(p, state, value_and_grad)
            history.append({k: np.asarray(v) for k, v in p.items()})
        return history

    @jax.jit
    def step(p, opt_state):
        grads = jax.grad(_loss)(p, a, b, jnp.sin)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    opt_state = tx.init(p)
    history = []
    for _ in range(STEPS):
        p, opt_state = step(p, opt_state)
        history.append({k: np.asarray(v) for k, v in p.items()})
    return history


@pytest.mark.parametrize("optim_cls, kwargs", list(_configs()))
def test_matches_torch_on_torchs_own_configurations(x64, optim_cls, kwargs):
    params, a, b = _problem(MATRIX_SHAPES if optim_cls.__name__ == "Muon" else SHAPES)
    expected = run_torch(optim_cls, kwargs, params, a, b)
    got = run_jaxnets(JAXNETS[optim_cls.__name__], kwargs, params, a, b)
    for step, (want, have) in enumerate(zip(expected, got, strict=True), start=1):
        for name in want:
            err = np.max(np.abs(have[name] - want[name])) / max(np.max(np.abs(want[name])), 1e-300)
            assert err <= RTOL, f"step {step}, {name}: relative error {err:.3g} > {RTOL}"
    # The run moved the weights, so agreeing means something.
    assert max(np.max(np.abs(expected[-1][k] - params[k])) for k in params) > 1e-4


def test_every_torch_optimizer_is_ported_or_refused_with_a_reason():
    names = {entry.optim_cls.__name__ for entry in common_optimizers.optim_db}
    missing = names - set(JAXNETS) - set(NOT_PORTED)
    assert not missing, f"torch.optim optimizers neither in jaxnets.optim nor in NOT_PORTED: {sorted(missing)}"
