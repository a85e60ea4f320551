"""Adamax with torch.optim.Adamax's weight decay and maximize."""

from __future__ import annotations

import optax

from ._adam import _adam_args
from ._common import maybe_maximize


def adamax(
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Adamax, step for step as ``torch.optim.Adamax``.

    torch computes ``g = -g`` when ``maximize``, ``g += weight_decay * p``,
    ``exp_avg = b1 * exp_avg + (1 - b1) * g``,
    ``exp_inf = max(b2 * exp_inf, |g| + eps)`` and
    ``p -= lr / (1 - b1**t) * exp_avg / exp_inf``.

    Compared with ``optax.adamax(learning_rate, b1, b2, eps)``: the same
    update (eps added to ``|g|`` inside the maximum, as torch does; checked by
    the tests), which is what is returned, but optax's ``learning_rate`` has
    no default where torch's is 2e-3, and optax has neither weight decay nor
    ``maximize``: ``optax.add_decayed_weights(weight_decay)`` goes first when
    ``weight_decay`` is nonzero (coupled, as in torch), a negation before it
    when ``maximize``.

    Optimizer state: ``optax.ScaleByAdamState``; ``count``, ``mu`` and ``nu``
    are torch's ``step``, ``exp_avg`` and ``exp_inf``.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr`` (step
        ``t`` from 1 uses ``lr(t - 1)``).
      betas: decay rates ``(b1, b2)`` of the first moment and the infinity
        norm, each in ``[0, 1)``.
      eps: added to ``|g|`` inside the maximum, >= 0.
      weight_decay: L2 penalty added to the gradient, >= 0.
      maximize: ascend instead: torch negates the gradient first.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params`` when
      ``weight_decay`` is nonzero.

    Raises:
      ValueError: for the arguments ``torch.optim.Adamax`` rejects.
    """
    lr, b1, b2, eps, weight_decay = _adam_args("adamax", "torch.optim.Adamax", lr, betas, eps, weight_decay)
    core = optax.adamax(lr, b1=b1, b2=b2, eps=eps)
    if weight_decay:
        core = optax.chain(optax.add_decayed_weights(weight_decay), core)
    return maybe_maximize(maximize, core)
