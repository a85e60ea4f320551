"""Adadelta with torch.optim.Adadelta's learning rate, weight decay and maximize."""

from __future__ import annotations

import optax

from ._common import check_lr, check_nonnegative, maybe_maximize


def adadelta(
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Adadelta, step for step as ``torch.optim.Adadelta``.

    torch computes ``g = -g`` when ``maximize``, ``g += weight_decay * p``,
    ``square_avg = rho * square_avg + (1 - rho) * g**2``,
    ``delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g``,
    ``acc_delta = rho * acc_delta + (1 - rho) * delta**2`` and ``p -= lr * delta``.

    Compared with ``optax.adadelta(learning_rate, rho, eps, weight_decay)``:
    the same update rule (``optax.scale_by_adadelta``, checked against torch
    by the tests), but optax's ``learning_rate`` has no default where torch's
    is 1.0, and optax has no ``maximize``. This returns
    ``optax.scale_by_adadelta(rho, eps)`` and
    ``optax.scale_by_learning_rate(lr)``, after
    ``optax.add_decayed_weights(weight_decay)`` when ``weight_decay`` is
    nonzero (torch's weight decay is coupled), after a negation when
    ``maximize``.

    Optimizer state: ``optax.ScaleByAdaDeltaState``; its ``e_g`` and ``e_x``
    are torch's ``square_avg`` and ``acc_delta``. torch's ``step`` is not
    used by the update; optax's ``scale_by_learning_rate`` counts steps only
    when ``lr`` is a schedule.

    Args:
      lr: coefficient of the delta, >= 0, or an optax schedule ``count -> lr``
        (step ``t`` from 1 uses ``lr(t - 1)``).
      rho: decay of the running averages, in ``[0, 1]``.
      eps: added inside both square roots, >= 0.
      weight_decay: L2 penalty added to the gradient, >= 0.
      maximize: ascend instead: torch negates the gradient first.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params`` when
      ``weight_decay`` is nonzero.

    Raises:
      ValueError: for the arguments ``torch.optim.Adadelta`` rejects.
    """
    lr = check_lr("adadelta", "torch.optim.Adadelta", lr)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(
            f"adadelta got rho={rho!r}; expected a value in [0, 1], as torch.optim.Adadelta does. Use e.g. rho=0.9."
        )
    check_nonnegative("adadelta", "torch.optim.Adadelta", eps=eps, weight_decay=weight_decay)
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    rho, eps, weight_decay = float(rho), float(eps), float(weight_decay)
    core = optax.chain(optax.scale_by_adadelta(rho=rho, eps=eps), optax.scale_by_learning_rate(lr))
    if weight_decay:
        core = optax.chain(optax.add_decayed_weights(weight_decay), core)
    return maybe_maximize(maximize, core)
