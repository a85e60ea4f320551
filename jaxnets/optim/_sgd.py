"""SGD with torch.optim.SGD's momentum, dampening and coupled weight decay."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._common import check_lr, lr_at, maybe_maximize


class DampenedTraceState(NamedTuple):
    """State of :func:`dampened_trace`, named after ``torch.optim.SGD``'s state.

    Attributes:
      step: int32 scalar, the number of updates applied so far. torch keeps no
        counter; it marks the first step by ``momentum_buffer`` being ``None``,
        which corresponds to ``step == 0`` here.
      momentum_buffer: pytree like the params, torch's ``momentum_buffer``.
    """

    step: jax.Array
    momentum_buffer: optax.Updates


def dampened_trace(momentum, dampening: float, nesterov: bool = False) -> optax.GradientTransformation:
    """Momentum as ``torch.optim.SGD`` computes it when ``dampening`` is nonzero.

    torch sets ``buf = g`` on the first step and ``buf = momentum * buf +
    (1 - dampening) * g`` afterwards, and returns ``buf``. ``optax.trace``
    computes ``momentum * buf + g`` from a zero buffer, which matches only
    for ``dampening == 0``: damping the first step as well would scale it by
    ``1 - dampening``.

    Args:
      momentum: momentum factor, or a schedule ``count -> momentum`` (torch's
        cycled momentum, e.g. ``lr_scheduler.OneCycleLR(...).momentum``).
      dampening: dampening for momentum; the first step is never damped.
      nesterov: return ``g + momentum * buf`` instead of ``buf``.

    Returns:
      An ``optax.GradientTransformation`` whose state is a
      :class:`DampenedTraceState`.
    """
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    momentum = momentum if callable(momentum) else float(momentum)
    dampening = float(dampening)

    def init_fn(params):
        return DampenedTraceState(step=jnp.zeros([], jnp.int32), momentum_buffer=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        first_step = state.step == 0
        m = lr_at(momentum, state.step)
        momentum_buffer = jax.tree.map(
            lambda g, buf: jnp.where(first_step, g, m * buf + (1 - dampening) * g),
            updates,
            state.momentum_buffer,
        )
        new_state = DampenedTraceState(step=optax.safe_increment(state.step), momentum_buffer=momentum_buffer)
        if nesterov:
            return jax.tree.map(lambda g, buf: g + m * buf, updates, momentum_buffer), new_state
        return momentum_buffer, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def sgd(
    lr: float = 1e-3,
    momentum: float = 0,
    dampening: float = 0,
    weight_decay: float = 0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Stochastic gradient descent, step for step as ``torch.optim.SGD``.

    torch computes ``g += weight_decay * p``; with momentum, ``buf = g`` on the
    first step and ``buf = momentum * buf + (1 - dampening) * g`` afterwards,
    then ``g = g + momentum * buf`` (Nesterov) or ``g = buf``; finally
    ``p -= lr * g``.

    Compared with ``optax.sgd(lr, momentum or None, nesterov)``: the same
    update when ``dampening == 0`` (``optax.trace`` starts from a zero buffer,
    so its first step is also ``buf = g``), and that is what is returned, after
    ``optax.add_decayed_weights(weight_decay)`` when ``weight_decay`` is
    nonzero (torch's weight decay is coupled: it is added to the gradient
    before momentum). optax has no dampening; for ``dampening != 0``
    :func:`dampened_trace` replaces ``optax.trace``.

    Optimizer state: ``optax.TraceState.trace`` is torch's ``momentum_buffer``
    (zeros standing for torch's ``None`` before the first step); with dampening
    it is a :class:`DampenedTraceState`.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr`` (step
        ``t`` from 1 uses ``lr(t - 1)``). torch 2.x defaults to 1e-3 (torch 1.x required it).
      momentum: momentum factor, >= 0; 0 disables momentum. May be a schedule
        ``count -> momentum`` (torch's ``CyclicLR``/``OneCycleLR`` with
        ``cycle_momentum``: ``momentum=scheduler.momentum``).
      dampening: dampening for momentum; ignored without momentum, as in torch.
      weight_decay: L2 penalty added to the gradient, >= 0.
      nesterov: use Nesterov momentum; needs ``momentum > 0`` and
        ``dampening == 0``.
      maximize: ascend instead: torch negates the gradient first, before
        weight decay.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params`` when
      ``weight_decay`` is nonzero.

    Raises:
      ValueError: for the arguments ``torch.optim.SGD`` rejects.
    """
    lr = check_lr("sgd", "torch.optim.SGD", lr)
    if momentum is None:
        raise ValueError(
            "sgd got momentum=None; expected a number >= 0 or a schedule. (A CyclicLR or OneCycleLR built with "
            "cycle_momentum=False has momentum None: pass a number, e.g. momentum=0.9.)"
        )
    if callable(momentum):  # a cycled momentum, as CyclicLR/OneCycleLR write into torch's param group
        if not 0.0 <= weight_decay:
            raise ValueError(f"sgd got weight_decay={weight_decay!r}; expected a value >= 0, as torch.optim.SGD does.")
        core = optax.chain(dampened_trace(momentum, float(dampening), nesterov), optax.scale_by_learning_rate(lr))
        if weight_decay:
            core = optax.chain(optax.add_decayed_weights(float(weight_decay)), core)
        return maybe_maximize(maximize, core)
    for name, value in (("momentum", momentum), ("weight_decay", weight_decay)):
        if not 0.0 <= value:
            raise ValueError(
                f"sgd got {name}={value!r}; expected a value >= 0, as torch.optim.SGD does. "
                f"Pass a non-negative `{name}`."
            )
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"sgd got nesterov=True with momentum={momentum!r} and dampening={dampening!r}; "
            "Nesterov momentum needs momentum > 0 and dampening == 0 (torch.optim.SGD requires "
            "the same). Set momentum, e.g. momentum=0.9, and dampening=0, or pass nesterov=False."
        )
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    momentum, dampening, weight_decay = float(momentum), float(dampening), float(weight_decay)
    if momentum and dampening:
        core = optax.chain(dampened_trace(momentum, dampening), optax.scale_by_learning_rate(lr))
    else:
        core = optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)
    if weight_decay:
        core = optax.chain(optax.add_decayed_weights(weight_decay), core)
    return maybe_maximize(maximize, core)
