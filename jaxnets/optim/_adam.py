"""Adam and AdamW with torch.optim's weight decay and AMSGrad."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._common import check_lr, lr_at, maybe_maximize


class TorchAmsgradState(NamedTuple):
    """State of :func:`scale_by_torch_amsgrad`, named after ``torch.optim.Adam``'s state.

    Attributes:
      step: int32 scalar, the number of updates applied so far (torch's ``step``,
        which torch stores as a float tensor).
      exp_avg: pytree like the params, the first moment.
      exp_avg_sq: pytree like the params, the second moment.
      max_exp_avg_sq: pytree like the params, the running maximum of
        ``exp_avg_sq`` before bias correction.
    """

    step: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    max_exp_avg_sq: optax.Updates


def scale_by_torch_amsgrad(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, amsgrad: bool = True
) -> optax.GradientTransformation:
    """Rescale updates by AMSGrad as ``torch.optim.Adam(amsgrad=True)`` does.

    torch keeps the maximum of the raw second moment,
    ``max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)``, and bias-corrects that
    maximum with the current step: ``denom = sqrt(max_exp_avg_sq) /
    sqrt(1 - b2**t) + eps`` and ``update = exp_avg / (1 - b1**t) / denom``.
    ``optax.scale_by_amsgrad`` takes the maximum of the bias-corrected second
    moments instead, so an early, strongly corrected value can stay the maximum
    and the two drift apart.

    Args:
      b1: decay rate of the first moment (torch's ``betas[0]``), or a schedule
        ``count -> b1``: torch's cycled beta1 (``lr_scheduler.OneCycleLR(...).momentum``),
        used in the moment and in the bias correction ``1 - b1**t`` of each step.
      b2: decay rate of the second moment (torch's ``betas[1]``).
      eps: added to the denominator after the square root.
      amsgrad: False gives torch's plain Adam (``max_exp_avg_sq`` then
        mirrors ``exp_avg_sq``); :func:`adam` uses it for a scheduled ``b1``.

    Returns:
      An ``optax.GradientTransformation`` whose state is a
      :class:`TorchAmsgradState`. Chain it with
      ``optax.scale_by_learning_rate(lr)``.
    """
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    b1 = b1 if callable(b1) else float(b1)
    b2, eps = float(b2), float(eps)

    def init_fn(params):
        return TorchAmsgradState(
            step=jnp.zeros([], jnp.int32),
            exp_avg=optax.tree.zeros_like(params),
            exp_avg_sq=optax.tree.zeros_like(params),
            max_exp_avg_sq=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        b1_t = lr_at(b1, state.step)
        step = optax.safe_increment(state.step)
        exp_avg = optax.tree.update_moment(updates, state.exp_avg, b1_t, 1)
        exp_avg_sq = optax.tree.update_moment_per_elem_norm(updates, state.exp_avg_sq, b2, 2)
        max_exp_avg_sq = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq) if amsgrad else exp_avg_sq
        bias_correction1 = 1 - b1_t**step
        bias_correction2_sqrt = jnp.sqrt(1 - b2**step)

        def scale(m, v):
            denom = jnp.sqrt(v) / bias_correction2_sqrt + eps
            return m / denom / bias_correction1

        updates = jax.tree.map(scale, exp_avg, max_exp_avg_sq)
        return updates, TorchAmsgradState(step, exp_avg, exp_avg_sq, max_exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


def _adam_args(
    name: str, torch_name: str, lr, betas: tuple[float, float], eps: float, weight_decay: float, b1_schedule=False
) -> tuple:
    """Validate Adam's arguments as torch does; return ``lr, b1, b2, eps, weight_decay`` as Python floats.

    ``lr`` may be a schedule, returned unchanged. Shared by adam, adamw, adamax, nadam and radam.
    """
    lr = check_lr(name, torch_name, lr)
    for arg, value in (("eps", eps), ("weight_decay", weight_decay)):
        if not 0.0 <= value:
            raise ValueError(
                f"{name} got {arg}={value!r}; expected a value >= 0, as {torch_name} does. Pass a non-negative `{arg}`."
            )
    if isinstance(betas, str | bytes) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"{name} got betas={betas!r}; expected a pair (beta1, beta2) such as (0.9, 0.999).")
    for index, beta in enumerate(betas):
        if index == 0 and callable(beta):  # a cycled beta1 (CyclicLR/OneCycleLR's schedule.momentum)
            if b1_schedule:
                continue
            raise ValueError(
                f"{name} got a schedule for betas[0]; only adam and adamw take a cycled beta1. Pass a number."
            )
        if not 0.0 <= beta < 1.0:
            raise ValueError(
                f"{name} got betas[{index}]={beta!r}; expected a value in [0, 1), as {torch_name} "
                "does. Use e.g. betas=(0.9, 0.999)."
            )
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    b1 = betas[0] if callable(betas[0]) else float(betas[0])
    return lr, b1, float(betas[1]), float(eps), float(weight_decay)


def adam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> optax.GradientTransformation:
    """Adam, step for step as ``torch.optim.Adam``.

    torch computes ``g = -g`` when ``maximize``, ``g += weight_decay * p``
    (coupled L2 decay) or, with ``decoupled_weight_decay=True``,
    ``p *= 1 - lr * weight_decay`` (AdamW), then
    ``p -= lr / (1 - b1**t) * exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - b2**t) + eps)``.

    Compared with ``optax.adam(lr, b1, b2, eps)``: the same update, which is
    what is returned, after ``optax.add_decayed_weights(weight_decay)`` when
    ``weight_decay`` is nonzero (optax.adam has no weight decay). With
    ``amsgrad=True``, ``optax.amsgrad`` would differ (see
    :func:`scale_by_torch_amsgrad`), so that transform is used instead. With
    ``decoupled_weight_decay=True`` this is :func:`adamw` (torch's AdamW is
    this Adam with that flag). ``maximize`` puts a negation first (optax has
    no such option).

    Optimizer state: ``optax.ScaleByAdamState`` holds torch's ``step``,
    ``exp_avg`` and ``exp_avg_sq`` as ``count``, ``mu`` and ``nu``; with AMSGrad
    it is a :class:`TorchAmsgradState`.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr`` (step
        ``t`` from 1 uses ``lr(t - 1)``).
      betas: decay rates ``(b1, b2)`` of the first and second moments, each in
        ``[0, 1)``; ``b1`` may be a schedule ``count -> b1`` (torch's cycled
        ``betas[0]``: ``betas=(scheduler.momentum, 0.999)``).
      eps: added to the denominator after the square root, >= 0.
      weight_decay: L2 penalty added to the gradient, >= 0.
      amsgrad: use torch's AMSGrad variant.
      maximize: ascend instead: torch negates the gradient first, before
        weight decay.
      decoupled_weight_decay: decay the parameters directly (AdamW) instead of
        adding ``weight_decay * p`` to the gradient.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params`` when
      ``weight_decay`` is nonzero.

    Raises:
      ValueError: for the arguments ``torch.optim.Adam`` rejects.
    """
    lr, b1, b2, eps, weight_decay = _adam_args("adam", "torch.optim.Adam", lr, betas, eps, weight_decay, True)
    if decoupled_weight_decay:
        return maybe_maximize(maximize, _adamw(lr, b1, b2, eps, weight_decay, amsgrad))
    if amsgrad or callable(b1):
        core = optax.chain(scale_by_torch_amsgrad(b1, b2, eps, amsgrad), optax.scale_by_learning_rate(lr))
    else:
        core = optax.adam(lr, b1=b1, b2=b2, eps=eps)
    if weight_decay:
        core = optax.chain(optax.add_decayed_weights(weight_decay), core)
    return maybe_maximize(maximize, core)


def adamw(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """AdamW, step for step as ``torch.optim.AdamW``.

    torch decays the parameters directly, ``p *= 1 - lr * weight_decay``, then
    takes the Adam step without weight decay.

    Compared with ``optax.adamw``: the same update (optax adds
    ``weight_decay * p`` to the Adam direction before scaling by ``-lr``), and
    that is what is returned, but ``weight_decay`` is always passed because
    optax's default is 1e-4 and torch's is 1e-2. With ``amsgrad=True`` the
    Adam direction comes from :func:`scale_by_torch_amsgrad` instead.

    Optimizer state: as for :func:`adam`.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr`` (step
        ``t`` from 1 uses ``lr(t - 1)``).
      betas: decay rates ``(b1, b2)`` of the first and second moments, each in
        ``[0, 1)``; ``b1`` may be a schedule ``count -> b1`` (torch's cycled
        ``betas[0]``: ``betas=(scheduler.momentum, 0.999)``).
      eps: added to the denominator after the square root, >= 0.
      weight_decay: decoupled weight decay coefficient, >= 0.
      amsgrad: use torch's AMSGrad variant.
      maximize: ascend instead: torch negates the gradient first.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params``.

    Raises:
      ValueError: for the arguments ``torch.optim.AdamW`` rejects.
    """
    lr, b1, b2, eps, weight_decay = _adam_args("adamw", "torch.optim.AdamW", lr, betas, eps, weight_decay, True)
    return maybe_maximize(maximize, _adamw(lr, b1, b2, eps, weight_decay, amsgrad))


def _adamw(lr, b1: float, b2: float, eps: float, weight_decay: float, amsgrad: bool) -> optax.GradientTransformation:
    """Adam with decoupled weight decay, from validated arguments."""
    if amsgrad or callable(b1):
        return optax.chain(
            scale_by_torch_amsgrad(b1, b2, eps, amsgrad),
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_learning_rate(lr),
        )
    return optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
