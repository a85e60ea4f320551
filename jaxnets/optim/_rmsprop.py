"""RMSprop with torch.optim.RMSprop's epsilon placement and weight decay."""

from __future__ import annotations

import optax

from ._common import check_lr, maybe_maximize


def rmsprop(
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0,
    momentum: float = 0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """RMSprop, step for step as ``torch.optim.RMSprop``.

    torch computes ``g += weight_decay * p``, ``square_avg = alpha * square_avg +
    (1 - alpha) * g**2`` and ``avg = sqrt(square_avg) + eps``; when centered,
    ``grad_avg = alpha * grad_avg + (1 - alpha) * g`` and ``avg =
    sqrt(square_avg - grad_avg**2) + eps``. Then ``p -= lr * g / avg``, or with
    momentum ``buf = momentum * buf + g / avg`` (from a zero buffer) and
    ``p -= lr * buf``.

    Compared with ``optax.rmsprop``: its defaults differ (``decay=0.9`` and
    ``eps_in_sqrt=True``, i.e. ``sqrt(v + eps)``), so this returns
    ``optax.rmsprop(lr, decay=alpha, eps=eps, eps_in_sqrt=False,
    centered=centered, momentum=momentum or None)``, which is torch's update,
    after ``optax.add_decayed_weights(weight_decay)`` when ``weight_decay`` is
    nonzero (optax.rmsprop has no weight decay).

    Optimizer state: torch's ``square_avg`` and ``grad_avg`` are ``nu`` and
    ``mu`` of ``optax.ScaleByRmsState`` or ``optax.ScaleByRStdDevState``.
    optax applies momentum after the learning rate, so its
    ``TraceState.trace`` is ``-lr`` times torch's ``momentum_buffer``. With a
    schedule as ``lr`` and momentum, that order would weight the buffer by
    past lrs, so the chain is then ``scale_by_rms``/``scale_by_stddev``,
    ``optax.trace(momentum)`` (whose trace is torch's buffer) and
    ``scale_by_learning_rate(lr)``. torch's
    ``step`` has no counterpart: RMSprop does not use it.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr`` (step
        ``t`` from 1 uses ``lr(t - 1)``).
      alpha: smoothing constant of the squared-gradient average, >= 0.
      eps: added to the denominator after the square root, >= 0.
      weight_decay: L2 penalty added to the gradient, >= 0.
      momentum: momentum factor, >= 0; 0 disables momentum.
      centered: normalise by the estimated variance of the gradient instead of
        its second moment.
      maximize: ascend instead: torch negates the gradient first, before
        weight decay.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params`` when
      ``weight_decay`` is nonzero.

    Raises:
      ValueError: for the arguments ``torch.optim.RMSprop`` rejects.
    """
    lr = check_lr("rmsprop", "torch.optim.RMSprop", lr)
    for name, value in (
        ("alpha", alpha),
        ("eps", eps),
        ("weight_decay", weight_decay),
        ("momentum", momentum),
    ):
        if not 0.0 <= value:
            raise ValueError(
                f"rmsprop got {name}={value!r}; expected a value >= 0, as torch.optim.RMSprop does. "
                f"Pass a non-negative `{name}`."
            )
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    alpha, eps, weight_decay, momentum = (
        float(alpha),
        float(eps),
        float(weight_decay),
        float(momentum),
    )
    if callable(lr) and momentum:
        # optax.rmsprop applies momentum after the lr, which equals torch only for a constant lr:
        # torch's buffer holds g / avg and is scaled by each step's own lr.
        scale = optax.scale_by_stddev if centered else optax.scale_by_rms
        core = optax.chain(
            scale(decay=alpha, eps=eps, eps_in_sqrt=False),
            optax.trace(decay=momentum),
            optax.scale_by_learning_rate(lr),
        )
    else:
        core = optax.rmsprop(
            lr,
            decay=alpha,
            eps=eps,
            eps_in_sqrt=False,
            centered=centered,
            momentum=momentum or None,
        )
    if weight_decay:
        core = optax.chain(optax.add_decayed_weights(weight_decay), core)
    return maybe_maximize(maximize, core)
