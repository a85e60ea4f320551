"""Adagrad with torch.optim.Adagrad's accumulator, epsilon and learning-rate decay."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._common import check_lr, maybe_maximize


class TorchAdagradState(NamedTuple):
    """State of :func:`scale_by_torch_adagrad`, named after ``torch.optim.Adagrad``'s state.

    Attributes:
      step: int32 scalar, the number of updates applied so far (torch's ``step``,
        which torch stores as a float tensor).
      sum: pytree like the params, the running sum of squared gradients.
    """

    step: jax.Array
    sum: optax.Updates


def scale_by_torch_adagrad(
    lr_decay: float = 0, initial_accumulator_value: float = 0, eps: float = 1e-10
) -> optax.GradientTransformation:
    """Rescale updates as ``torch.optim.Adagrad`` does, all but the learning rate.

    At step ``t`` (from 1) torch computes ``sum += g**2`` and
    ``g / (sqrt(sum) + eps) / (1 + (t - 1) * lr_decay)``, which this returns.
    ``optax.scale_by_rss`` differs in three ways: its accumulator starts at
    0.1, it adds ``eps`` (1e-7) inside the square root, and it has no
    learning-rate decay.

    Args:
      lr_decay: learning-rate decay; step ``t`` is divided by
        ``1 + (t - 1) * lr_decay``.
      initial_accumulator_value: starting value of ``sum``.
      eps: added to the denominator after the square root.

    Returns:
      An ``optax.GradientTransformation`` whose state is a
      :class:`TorchAdagradState`. Chain it with
      ``optax.scale_by_learning_rate(lr)``.
    """
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    lr_decay, initial_accumulator_value, eps = float(lr_decay), float(initial_accumulator_value), float(eps)

    def init_fn(params):
        return TorchAdagradState(
            step=jnp.zeros([], jnp.int32),
            sum=optax.tree.full_like(params, initial_accumulator_value),
        )

    def update_fn(updates, state, params=None):
        del params
        step = optax.safe_increment(state.step)
        sum_of_squares = jax.tree.map(lambda g, s: s + g * g, updates, state.sum)
        decay = 1 / (1 + (step - 1) * lr_decay)
        updates = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps) * decay, updates, sum_of_squares)
        return updates, TorchAdagradState(step=step, sum=sum_of_squares)

    return optax.GradientTransformation(init_fn, update_fn)


def adagrad(
    lr: float = 1e-2,
    lr_decay: float = 0,
    weight_decay: float = 0,
    initial_accumulator_value: float = 0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Adagrad, step for step as ``torch.optim.Adagrad``.

    At step ``t`` (from 1) torch computes ``g += weight_decay * p``,
    ``clr = lr / (1 + (t - 1) * lr_decay)``, ``sum += g**2`` and
    ``p -= clr * g / (sqrt(sum) + eps)``.

    Compared with ``optax.adagrad``: optax starts the accumulator at 0.1, adds
    ``eps`` (1e-7) inside the square root, and has neither learning-rate decay
    nor weight decay. This returns :func:`scale_by_torch_adagrad` followed by
    ``optax.scale_by_learning_rate(lr)``, after
    ``optax.add_decayed_weights(weight_decay)`` when ``weight_decay`` is nonzero.

    Optimizer state: a :class:`TorchAdagradState` holding torch's ``step`` and
    ``sum``.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr`` (step
        ``t`` from 1 uses ``lr(t - 1)``; ``lr_decay`` applies on top).
      lr_decay: learning-rate decay, >= 0.
      weight_decay: L2 penalty added to the gradient, >= 0.
      initial_accumulator_value: starting value of the squared-gradient sum,
        >= 0.
      eps: added to the denominator after the square root, >= 0.
      maximize: ascend instead: torch negates the gradient first, before
        weight decay.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params`` when
      ``weight_decay`` is nonzero.

    Raises:
      ValueError: for the arguments ``torch.optim.Adagrad`` rejects.
    """
    lr = check_lr("adagrad", "torch.optim.Adagrad", lr)
    for name, value in (
        ("lr_decay", lr_decay),
        ("weight_decay", weight_decay),
        ("initial_accumulator_value", initial_accumulator_value),
        ("eps", eps),
    ):
        if not 0.0 <= value:
            raise ValueError(
                f"adagrad got {name}={value!r}; expected a value >= 0, as torch.optim.Adagrad does. "
                f"Pass a non-negative `{name}`."
            )
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    weight_decay = float(weight_decay)
    core = optax.chain(
        scale_by_torch_adagrad(lr_decay, initial_accumulator_value, eps),
        optax.scale_by_learning_rate(lr),
    )
    if weight_decay:
        core = optax.chain(optax.add_decayed_weights(weight_decay), core)
    return maybe_maximize(maximize, core)
