"""Adafactor with torch.optim.Adafactor's factored second moment, relative step size and update clipping."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._common import check_lr, check_nonnegative, lr_at, maybe_maximize


class TorchAdafactorState(NamedTuple):
    """State of :func:`scale_by_torch_adafactor`, named after ``torch.optim.Adafactor``'s state.

    Attributes:
      step: int32 scalar, the number of updates applied so far (torch's ``step``).
      row_var: pytree like the params. For a parameter of 2 or more dims, the
        row factor of the second moment, shape ``(..., m, 1)`` as torch's
        ``row_var``; for a 0-D or 1-D parameter an empty ``(0,)`` placeholder.
      col_var: likewise the column factor, shape ``(..., 1, n)``.
      variance: for a 0-D or 1-D parameter, the unfactored second moment (torch's
        ``variance``); an empty placeholder for the factored ones.
    """

    step: jax.Array
    row_var: optax.Updates
    col_var: optax.Updates
    variance: optax.Updates


def _lerp(start, end, weight):
    """torch.lerp's arithmetic: from ``start`` for weights below 0.5, from ``end`` above."""
    weight = weight.astype(start.dtype)
    return jnp.where(weight < 0.5, start + weight * (end - start), end - (end - start) * (1 - weight))


def scale_by_torch_adafactor(
    lr=1e-2,
    beta2_decay: float = -0.8,
    eps1: float | None = None,
    eps2: float = 1e-3,
    d: float = 1.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """The whole ``torch.optim.Adafactor`` step after ``maximize``, learning rate and weight decay included.

    At step ``t`` (from 1), per parameter ``p`` with gradient ``g``, torch
    computes ``rho = min(lr, 1 / sqrt(t))``, ``alpha = max(eps2, rms(p)) *
    rho`` and, with ``w = t**beta2_decay``:

    - a parameter of 2 or more dims is factored over its last two dims:
      ``row_var = lerp(row_var, mean(g**2, -1), w)``, ``col_var =
      lerp(col_var, mean(g**2, -2), w)`` and ``v = row_var @ col_var /
      max(mean(row_var, -2), eps1)``;
    - otherwise ``variance = lerp(variance, g**2, w)`` and ``v = variance``;

    then ``u = g / sqrt(max(v, eps1**2))`` and the step ``-alpha / max(1,
    rms(u) / d) * u``, after the decoupled decay ``p *= 1 - lr * weight_decay``
    (``alpha`` reads ``p`` before the decay).

    ``optax.scale_by_factored_rms`` differs: it adds ``eps`` to ``g**2``
    before averaging, factors only parameters whose two largest dims are at
    least ``min_dim_size_to_factor`` (torch factors every parameter of 2 or
    more dims, over its last two), and leaves the relative step size and
    parameter scaling to ``optax.adafactor``, which uses ``0.01`` where torch
    uses ``lr``.

    Args:
      lr: learning rate: the cap on the relative step size ``rho``. A number
        or an optax schedule ``count -> lr``.
      beta2_decay: the exponent of ``t`` in the second-moment weight, <= 0.
      eps1: floor of the second moment (squared) and of the row mean;
        ``None`` for the machine epsilon of each parameter's dtype (torch
        takes the first parameter's dtype for all of them, which differs only
        when the dtypes are mixed).
      eps2: floor of ``rms(p)`` in the parameter scaling.
      d: the clipping threshold of ``rms(u)``.
      weight_decay: decoupled weight decay coefficient, times the step's ``lr``.

    Returns:
      An ``optax.GradientTransformation`` whose state is a
      :class:`TorchAdafactorState`; its ``update`` needs ``params``.
    """
    beta2_decay, eps2, d, weight_decay = float(beta2_decay), float(eps2), float(d), float(weight_decay)

    def init_fn(params):
        for leaf in jax.tree.leaves(params):
            if jnp.iscomplexobj(leaf):
                raise ValueError(
                    f"adafactor got a complex parameter of dtype {leaf.dtype}; torch.optim.Adafactor does not "
                    "support complex parameters. Split it into real and imaginary parts."
                )

        def placeholder(p):
            return jnp.zeros((0,), p.dtype)

        def factored(p, axis):
            if p.ndim < 2:
                return placeholder(p)
            shape = list(p.shape)
            shape[axis] = 1
            return jnp.zeros(shape, p.dtype)

        return TorchAdafactorState(
            step=jnp.zeros([], jnp.int32),
            row_var=jax.tree.map(lambda p: factored(p, -1), params),
            col_var=jax.tree.map(lambda p: factored(p, -2), params),
            variance=jax.tree.map(lambda p: placeholder(p) if p.ndim > 1 else jnp.zeros_like(p), params),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "adafactor's update needs the params (it scales the step by rms(p)); call update(grads, state, params)."
            )
        step_lr = lr_at(lr, state.step)
        step = optax.safe_increment(state.step)
        t = jnp.asarray(step, dtype=float)  # float64 under x64, as torch's Python arithmetic
        weight = t**beta2_decay
        rho = jnp.minimum(step_lr, 1 / jnp.sqrt(t))

        def leaf(g, p, row_var, col_var, variance):
            e1 = jnp.finfo(p.dtype).eps if eps1 is None else eps1
            size = max(p.size, 1)
            rms_p = jnp.sqrt(jnp.sum(jnp.square(p))).astype(t.dtype) / size**0.5
            alpha = jnp.maximum(eps2, rms_p) * rho
            if g.ndim > 1:
                row_var = _lerp(row_var, jnp.mean(g * g, axis=-1, keepdims=True), weight)
                col_var = _lerp(col_var, jnp.mean(g * g, axis=-2, keepdims=True), weight)
                row_mean = jnp.maximum(jnp.mean(row_var, axis=-2, keepdims=True), e1)
                var_estimate = (row_var * col_var) / row_mean
            else:
                variance = _lerp(variance, g * g, weight)
                var_estimate = variance
            u = g * jax.lax.rsqrt(jnp.maximum(var_estimate, e1 * e1))
            rms_u = jnp.sqrt(jnp.sum(jnp.square(u))).astype(t.dtype) / (size**0.5 * d)
            scale = -alpha / jnp.maximum(1.0, rms_u)
            delta = scale.astype(p.dtype) * u
            if weight_decay:
                delta = delta - jnp.asarray(step_lr * weight_decay, p.dtype) * p
            return delta, row_var, col_var, variance

        out = jax.tree.map(leaf, updates, params, state.row_var, state.col_var, state.variance)
        parts = [jax.tree.map(lambda _, o, i=i: o[i], updates, out) for i in range(4)]
        return parts[0], TorchAdafactorState(step, parts[1], parts[2], parts[3])

    return optax.GradientTransformation(init_fn, update_fn)


def adafactor(
    lr: float = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Adafactor, step for step as ``torch.optim.Adafactor``.

    torch computes ``g = -g`` when ``maximize``, then ``alpha`` from the
    parameter before decay, ``p *= 1 - lr * weight_decay`` and the step of
    :func:`scale_by_torch_adafactor`. The factorisation is torch's rule applied
    to the array as jaxnets holds it: every parameter of 2 or more dims is
    factored over its last two dims. For the torch-mirror layers
    (``jaxnets.nn``, torch layouts) that is torch's factorisation exactly; for
    a Flax ``(in, out)`` linear kernel it is torch's transposed, which gives the
    same step (the row and column factors swap); for a Flax ``HWIO`` conv kernel
    it factors over ``(I, O)`` where torch's ``OIHW`` factors over ``(H, W)``,
    which is a different step.

    Compared with ``optax.adafactor``: optax adds ``eps`` to ``g**2`` before
    averaging, factors only dims of at least 128, caps the relative step at
    0.01 instead of ``lr``, has momentum and decay-rate options torch has not,
    and no ``maximize``; see :func:`scale_by_torch_adafactor`.

    Optimizer state: ``TorchAdafactorState(step, row_var, col_var, variance)``,
    torch's names and shapes.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr``: caps the
        relative step size and multiplies ``weight_decay``.
      beta2_decay: the second-moment weight is ``t**beta2_decay``; <= 0.
      eps: ``(eps1, eps2)``: ``eps1`` (>= 0, or ``None`` for the dtype's
        machine epsilon) floors the second moment, ``eps2`` (>= 0) floors
        ``rms(p)``.
      d: clipping threshold of the update's rms, >= 1.
      weight_decay: decoupled weight decay coefficient, >= 0 (times ``lr``).
      maximize: ascend instead: torch negates the gradient first.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params``.

    Raises:
      ValueError: for the arguments ``torch.optim.Adafactor`` rejects.
    """
    name, torch_name = "adafactor", "torch.optim.Adafactor"
    lr = check_lr(name, torch_name, lr)
    if isinstance(beta2_decay, bool) or not isinstance(beta2_decay, numbers.Real) or not beta2_decay <= 0.0:
        raise ValueError(
            f"{name} got beta2_decay={beta2_decay!r}; expected a number <= 0, as {torch_name} does "
            "(the second-moment weight is t**beta2_decay). Pass e.g. beta2_decay=-0.8."
        )
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise ValueError(
            f"{name} got eps={eps!r}; expected a pair (eps1, eps2), as {torch_name} does. Pass e.g. eps=(None, 1e-3)."
        )
    eps1, eps2 = eps
    if eps1 is not None:
        if not 0.0 <= eps1:
            raise ValueError(
                f"{name} got eps[0]={eps1!r} (epsilon1); expected None or a value >= 0, as {torch_name} does. "
                "Pass e.g. eps=(None, 1e-3)."
            )
        eps1 = float(eps1)
    if not 0.0 <= eps2:
        raise ValueError(
            f"{name} got eps[1]={eps2!r} (epsilon2); expected a value >= 0, as {torch_name} does. "
            "Pass e.g. eps=(None, 1e-3)."
        )
    if not 1.0 <= d:
        raise ValueError(
            f"{name} got d={d!r}; expected a clipping threshold >= 1, as {torch_name} does. Pass e.g. d=1.0."
        )
    check_nonnegative(name, torch_name, weight_decay=weight_decay)
    core = scale_by_torch_adafactor(lr, beta2_decay, eps1, eps2, d, float(weight_decay))
    return maybe_maximize(maximize, core)
