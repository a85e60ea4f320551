"""ASGD (averaged SGD) with torch.optim.ASGD's eta and mu schedules and its averaged parameters."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._common import check_lr, check_nonnegative, lr_at, maybe_maximize


class TorchASGDState(NamedTuple):
    """State of :func:`scale_by_torch_asgd`, named after ``torch.optim.ASGD``'s state.

    Attributes:
      step: int32 scalar, the number of updates applied so far (torch's ``step``).
      eta: float32 scalar, the step size of the next update. torch stores it
        (and ``mu``) as a tensor of its scalar dtype, float32 unless the
        default dtype is float64; float32 here, so float64 runs match torch's
        defaults.
      mu: float32 scalar, the averaging coefficient of the next update.
      ax: pytree like the params, the averaged parameters. Read them with
        :func:`asgd_averaged_params`.
    """

    step: jax.Array
    eta: jax.Array
    mu: jax.Array
    ax: optax.Params


def scale_by_torch_asgd(
    lr=1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6
) -> optax.GradientTransformation:
    """The whole ``torch.optim.ASGD`` update after weight decay, learning rate included.

    At step ``t`` (from 1) torch computes ``p = p * (1 - lambd * eta) - eta *
    g``, then averages: ``ax += mu * (p - ax)``, or ``ax = p`` while ``mu ==
    1``; then ``eta = lr / (1 + lambd * lr * t)**alpha`` and ``mu = 1 /
    max(1, t - t0)`` for the next step. ``eta`` starts at ``lr``, ``mu`` at 1.
    This returns the change of ``p`` and keeps ``ax``.

    optax has no averaged SGD.

    Args:
      lr: learning rate, or an optax schedule ``count -> lr``: ``eta`` is set
        from the lr of the step that just ran (``lr(0)`` to start), as torch
        sets it from the group's lr at the end of each step.
      lambd: decay term.
      alpha: power of the ``eta`` schedule.
      t0: the step after which averaging starts.

    Returns:
      An ``optax.GradientTransformation`` whose state is a
      :class:`TorchASGDState`; its ``update`` needs ``params``.
    """
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    lambd, alpha, t0 = float(lambd), float(alpha), float(t0)

    def init_fn(params):
        return TorchASGDState(
            step=jnp.zeros([], jnp.int32),
            eta=jnp.asarray(lr_at(lr, 0), jnp.float32),
            mu=jnp.ones([], jnp.float32),
            ax=jax.tree.map(jnp.copy, params),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "asgd's update needs the params (it decays and averages them); call update(grads, state, params)."
            )
        step_lr = lr_at(lr, state.step)
        step = optax.safe_increment(state.step)
        t = jnp.asarray(step, dtype=float)  # float64 under x64, as torch's Python arithmetic
        eta = state.eta.astype(t.dtype)
        decay = 1 - lambd * eta

        def new_param(p, g):
            return p * decay.astype(p.dtype) - eta.astype(p.dtype) * g

        new_params = jax.tree.map(new_param, params, updates)
        mu = state.mu
        ax = jax.tree.map(
            lambda a, p: jnp.where(mu == 1, p, a + (p - a) * mu.astype(p.dtype)),
            state.ax,
            new_params,
        )
        new_eta = (step_lr / (1 + lambd * step_lr * t) ** alpha).astype(jnp.float32)
        new_mu = (1 / jnp.maximum(1.0, t - t0)).astype(jnp.float32)
        updates = jax.tree.map(lambda n, p: n - p, new_params, params)
        return updates, TorchASGDState(step, new_eta, new_mu, ax)

    return optax.GradientTransformation(init_fn, update_fn)


def asgd(
    lr: float = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Averaged SGD, step for step as ``torch.optim.ASGD``.

    torch computes ``g = -g`` when ``maximize``, ``g += weight_decay * p``,
    then the update of :func:`scale_by_torch_asgd`: ``p = p * (1 - lambd *
    eta) - eta * g`` and the running average ``ax`` of the parameters, which
    is what ASGD is for: evaluate with ``ax`` (see
    :func:`asgd_averaged_params`), train with ``p``.

    optax has no averaged SGD; the nearest call, ``optax.sgd(lr)``, has no
    ``lambd`` decay, no decaying ``eta`` and no average.

    Optimizer state: a :class:`TorchASGDState` with torch's ``step``,
    ``eta``, ``mu`` and ``ax``.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr``.
      lambd: decay term.
      alpha: power of the ``eta`` schedule.
      t0: the step after which averaging starts (before it ``ax`` is ``p``).
      weight_decay: L2 penalty added to the gradient, >= 0.
      maximize: ascend instead: torch negates the gradient first.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params``.

    Raises:
      ValueError: for the arguments ``torch.optim.ASGD`` rejects (torch checks
        only ``lr`` and ``weight_decay``).
    """
    lr = check_lr("asgd", "torch.optim.ASGD", lr)
    check_nonnegative("asgd", "torch.optim.ASGD", weight_decay=weight_decay)
    weight_decay = float(weight_decay)
    core = scale_by_torch_asgd(lr, lambd, alpha, t0)
    if weight_decay:
        core = optax.chain(optax.add_decayed_weights(weight_decay), core)
    return maybe_maximize(maximize, core)


def asgd_averaged_params(opt_state) -> optax.Params:
    """The averaged parameters ``ax`` (torch's ``state[p]["ax"]``) in an :func:`asgd` state.

    Args:
      opt_state: the state of an :func:`asgd` optimizer, alone or inside any
        optax chain or wrapper (e.g. ``nnx.Optimizer``'s ``opt_state``
        converted with ``nnx.to_pure_dict``/``nnx.state`` keeps it).

    Raises:
      ValueError: when the state holds no :class:`TorchASGDState`, or several.
    """
    leaves = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, TorchASGDState))
    found = [s for s in leaves if isinstance(s, TorchASGDState)]
    if len(found) != 1:
        raise ValueError(
            f"asgd_averaged_params found {len(found)} TorchASGDState in the optimizer state; expected exactly one. "
            "Pass the state of a jaxnets.optim.asgd optimizer."
        )
    return found[0].ax
