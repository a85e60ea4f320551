"""RAdam with torch.optim.RAdam's rectification rule, eps placement and weight decay."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._adam import _adam_args
from ._common import maybe_maximize


class TorchRAdamState(NamedTuple):
    """State of :func:`scale_by_torch_radam`, named after ``torch.optim.RAdam``'s state.

    Attributes:
      step: int32 scalar, the number of updates applied so far (torch's ``step``).
      exp_avg: pytree like the params, the first moment.
      exp_avg_sq: pytree like the params, the second moment.
    """

    step: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates


def scale_by_torch_radam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Rescale updates as ``torch.optim.RAdam`` does, all but the learning rate.

    At step ``t`` (from 1) torch computes the Adam moments,
    ``rho_inf = 2 / (1 - b2) - 1`` and ``rho_t = rho_inf - 2 t b2**t / (1 -
    b2**t)``. When ``rho_t > 5`` the direction is ``exp_avg / (1 - b1**t) *
    sqrt(1 - b2**t) / (sqrt(exp_avg_sq) + eps) * r_t`` with the rectification
    ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2)
    rho_t))``; otherwise it is the bias-corrected ``exp_avg`` alone.

    ``optax.scale_by_radam`` switches at ``rho_t >= 5`` (torch: ``> 5``) and
    adds ``eps`` to ``sqrt(nu_hat)``, the bias-corrected root, where torch
    adds it to the raw ``sqrt(exp_avg_sq)``; the updates differ slightly at
    every rectified step (3e-10 relative in the weights after 12 default
    steps on the problem of ``tests/test_optim_torch.py``; more for larger
    ``eps``).

    Args:
      b1: decay rate of the first moment (torch's ``betas[0]``).
      b2: decay rate of the second moment (torch's ``betas[1]``).
      eps: added to ``sqrt(exp_avg_sq)``.

    Returns:
      An ``optax.GradientTransformation`` whose state is a
      :class:`TorchRAdamState`. Chain it with
      ``optax.scale_by_learning_rate(lr)``.
    """
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    b1, b2, eps = float(b1), float(b2), float(eps)
    rho_inf = 2 / (1 - b2) - 1

    def init_fn(params):
        return TorchRAdamState(
            step=jnp.zeros([], jnp.int32),
            exp_avg=optax.tree.zeros_like(params),
            exp_avg_sq=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        step = optax.safe_increment(state.step)
        t = jnp.asarray(step, dtype=float)  # float64 under x64, as torch's Python arithmetic
        exp_avg = optax.tree.update_moment(updates, state.exp_avg, b1, 1)
        exp_avg_sq = optax.tree.update_moment_per_elem_norm(updates, state.exp_avg_sq, b2, 2)
        bias_correction1 = 1 - b1**t
        bias_correction2 = 1 - b2**t
        rho_t = rho_inf - 2 * t * b2**t / bias_correction2
        rectified = rho_t > 5.0
        # The maximum only keeps the unused branch finite; it is never taken when rho_t <= 5.
        rect = jnp.sqrt(jnp.maximum((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.0))

        def direction(m, v):
            corrected = m / bias_correction1.astype(m.dtype)
            adaptive = jnp.sqrt(bias_correction2).astype(v.dtype) / (jnp.sqrt(v) + eps)
            return jnp.where(rectified, corrected * adaptive * rect.astype(m.dtype), corrected)

        updates = jax.tree.map(direction, exp_avg, exp_avg_sq)
        return updates, TorchRAdamState(step, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


def radam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """RAdam, step for step as ``torch.optim.RAdam``.

    torch computes ``g = -g`` when ``maximize``; ``g += weight_decay * p``, or
    with ``decoupled_weight_decay`` ``p *= 1 - lr * weight_decay``; then the
    step of :func:`scale_by_torch_radam` times ``-lr``.

    Compared with ``optax.radam(learning_rate, b1, b2, eps)``: optax
    rectifies when ``rho_t >= 5`` (torch ``> 5``), adds ``eps`` to the
    bias-corrected root instead of the raw one, and has neither weight decay
    nor ``maximize``. This returns :func:`scale_by_torch_radam` and
    ``optax.scale_by_learning_rate(lr)``, with
    ``optax.add_decayed_weights(weight_decay)`` before it (coupled) or between
    the two (decoupled), after a negation when ``maximize``.

    Optimizer state: a :class:`TorchRAdamState` with torch's ``step``,
    ``exp_avg`` and ``exp_avg_sq``.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr`` (step
        ``t`` from 1 uses ``lr(t - 1)``).
      betas: decay rates ``(b1, b2)`` of the moments, each in ``[0, 1)``.
      eps: added to ``sqrt(exp_avg_sq)``, >= 0.
      weight_decay: weight decay coefficient, >= 0.
      decoupled_weight_decay: decay the parameters directly (RAdamW) instead
        of adding ``weight_decay * p`` to the gradient.
      maximize: ascend instead: torch negates the gradient first.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params`` when
      ``weight_decay`` is nonzero.

    Raises:
      ValueError: for the arguments ``torch.optim.RAdam`` rejects.
    """
    lr, b1, b2, eps, weight_decay = _adam_args("radam", "torch.optim.RAdam", lr, betas, eps, weight_decay)
    direction = scale_by_torch_radam(b1, b2, eps)
    if weight_decay and decoupled_weight_decay:
        core = optax.chain(direction, optax.add_decayed_weights(weight_decay), optax.scale_by_learning_rate(lr))
    elif weight_decay:
        core = optax.chain(optax.add_decayed_weights(weight_decay), direction, optax.scale_by_learning_rate(lr))
    else:
        core = optax.chain(direction, optax.scale_by_learning_rate(lr))
    return maybe_maximize(maximize, core)
