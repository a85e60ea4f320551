"""NAdam with torch.optim.NAdam's momentum schedule (mu_product) and weight decay."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._adam import _adam_args
from ._common import check_nonnegative, maybe_maximize


class TorchNAdamState(NamedTuple):
    """State of :func:`scale_by_torch_nadam`, named after ``torch.optim.NAdam``'s state.

    Attributes:
      step: int32 scalar, the number of updates applied so far (torch's ``step``).
      mu_product: float32 scalar, the product of the momentum coefficients
        ``mu_1 * ... * mu_t``. torch stores it as a tensor of its scalar dtype,
        float32 unless the default dtype is float64, and multiplies in that
        dtype; this keeps float32 so that float64 runs match torch's defaults.
      exp_avg: pytree like the params, the first moment.
      exp_avg_sq: pytree like the params, the second moment.
    """

    step: jax.Array
    mu_product: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates


def scale_by_torch_nadam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, momentum_decay: float = 4e-3
) -> optax.GradientTransformation:
    """Rescale updates as ``torch.optim.NAdam`` does, all but the learning rate.

    At step ``t`` (from 1) torch computes ``mu_t = b1 * (1 - 0.5 * 0.96**(t *
    momentum_decay))``, ``mu_product *= mu_t``, the Adam moments, ``denom =
    sqrt(exp_avg_sq / (1 - b2**t)) + eps`` and the direction
    ``(1 - mu_t) / (1 - mu_product) * g / denom + mu_{t+1} / (1 - mu_product *
    mu_{t+1}) * exp_avg / denom``, which this returns.

    ``optax.scale_by_adam(nesterov=True)`` (``optax.nadam``) uses a constant
    ``b1`` in place of torch's warming-up ``mu_t`` and its product, and adds
    ``eps`` to ``sqrt(nu_hat)`` the same way; the updates differ from the
    first step.

    Args:
      b1: decay rate of the first moment (torch's ``betas[0]``).
      b2: decay rate of the second moment (torch's ``betas[1]``).
      eps: added to the denominator after the square root.
      momentum_decay: torch's ``momentum_decay`` (psi) of the ``mu_t`` schedule.

    Returns:
      An ``optax.GradientTransformation`` whose state is a
      :class:`TorchNAdamState`. Chain it with
      ``optax.scale_by_learning_rate(lr)``.
    """
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    b1, b2, eps, momentum_decay = float(b1), float(b2), float(eps), float(momentum_decay)

    def init_fn(params):
        return TorchNAdamState(
            step=jnp.zeros([], jnp.int32),
            mu_product=jnp.ones([], jnp.float32),
            exp_avg=optax.tree.zeros_like(params),
            exp_avg_sq=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        step = optax.safe_increment(state.step)
        t = jnp.asarray(step, dtype=float)  # float64 under x64, as torch's Python arithmetic
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        mu_product = state.mu_product * mu.astype(jnp.float32)
        mu_product_value = mu_product.astype(t.dtype)
        mu_product_next = mu_product_value * mu_next
        bias_correction2 = 1 - b2**t
        exp_avg = optax.tree.update_moment(updates, state.exp_avg, b1, 1)
        exp_avg_sq = optax.tree.update_moment_per_elem_norm(updates, state.exp_avg_sq, b2, 2)
        coef_grad = (1.0 - mu) / (1.0 - mu_product_value)
        coef_avg = mu_next / (1.0 - mu_product_next)

        def direction(g, m, v):
            denom = jnp.sqrt(v / bias_correction2.astype(v.dtype)) + eps
            return (coef_grad.astype(g.dtype) * g / denom + coef_avg.astype(g.dtype) * m / denom).astype(g.dtype)

        updates = jax.tree.map(direction, updates, exp_avg, exp_avg_sq)
        return updates, TorchNAdamState(step, mu_product, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


def nadam(
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """NAdam, step for step as ``torch.optim.NAdam``.

    torch computes ``g = -g`` when ``maximize``; ``g += weight_decay * p``, or
    with ``decoupled_weight_decay`` ``p *= 1 - lr * weight_decay``; then the
    step of :func:`scale_by_torch_nadam` times ``-lr``.

    Compared with ``optax.nadam(learning_rate, b1, b2, eps)``: optax keeps
    the momentum coefficient at ``b1`` while torch warms it up,
    ``mu_t = b1 * (1 - 0.5 * 0.96**(t * momentum_decay))``, and divides by
    the running product of the ``mu_t`` (torch's ``mu_product``), so the
    two differ from the first step (0.9% relative in the weights after 12
    default steps on the problem of ``tests/test_optim_torch.py``); optax has neither weight decay nor
    ``maximize``. This returns :func:`scale_by_torch_nadam` and
    ``optax.scale_by_learning_rate(lr)``, with
    ``optax.add_decayed_weights(weight_decay)`` before it (coupled) or between
    the two (decoupled), after a negation when ``maximize``.

    Optimizer state: a :class:`TorchNAdamState` with torch's ``step``,
    ``mu_product``, ``exp_avg`` and ``exp_avg_sq``.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr`` (step
        ``t`` from 1 uses ``lr(t - 1)``).
      betas: decay rates ``(b1, b2)`` of the moments, each in ``[0, 1)``.
      eps: added to the denominator after the square root, >= 0.
      weight_decay: weight decay coefficient, >= 0.
      momentum_decay: psi of the momentum schedule, >= 0.
      decoupled_weight_decay: decay the parameters directly (NAdamW) instead
        of adding ``weight_decay * p`` to the gradient.
      maximize: ascend instead: torch negates the gradient first.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params`` when
      ``weight_decay`` is nonzero.

    Raises:
      ValueError: for the arguments ``torch.optim.NAdam`` rejects.
    """
    lr, b1, b2, eps, weight_decay = _adam_args("nadam", "torch.optim.NAdam", lr, betas, eps, weight_decay)
    check_nonnegative("nadam", "torch.optim.NAdam", momentum_decay=momentum_decay)
    direction = scale_by_torch_nadam(b1, b2, eps, momentum_decay)
    if weight_decay and decoupled_weight_decay:
        core = optax.chain(direction, optax.add_decayed_weights(weight_decay), optax.scale_by_learning_rate(lr))
    elif weight_decay:
        core = optax.chain(optax.add_decayed_weights(weight_decay), direction, optax.scale_by_learning_rate(lr))
    else:
        core = optax.chain(direction, optax.scale_by_learning_rate(lr))
    return maybe_maximize(maximize, core)
