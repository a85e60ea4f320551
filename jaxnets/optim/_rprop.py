"""Rprop with torch.optim.Rprop's sign rule and step-size bounds."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._common import check_lr, lr_at, maybe_maximize


class TorchRpropState(NamedTuple):
    """State of :func:`scale_by_torch_rprop`, named after ``torch.optim.Rprop``'s state.

    Attributes:
      step: int32 scalar, the number of updates applied so far (torch's ``step``).
      prev: pytree like the params, the previous gradient, zeroed where its
        sign changed.
      step_size: pytree like the params, the per-element step sizes.
    """

    step: jax.Array
    prev: optax.Updates
    step_size: optax.Updates


def scale_by_torch_rprop(
    lr=1e-2, etas: tuple[float, float] = (0.5, 1.2), step_sizes: tuple[float, float] = (1e-6, 50)
) -> optax.GradientTransformation:
    """The whole ``torch.optim.Rprop`` update, learning rate included.

    torch starts every step size at ``lr`` and ``prev`` at 0. Each step,
    ``s = sign(g * prev)``; the step size is multiplied by ``etaplus`` where
    ``s > 0``, ``etaminus`` where ``s < 0`` and 1 where ``s == 0``, then
    clamped to ``step_sizes``; where ``s < 0`` the gradient is zeroed (so
    that element does not move and the next step sees ``s == 0``); finally
    ``p -= sign(g) * step_size`` and ``prev = g``.

    Args:
      lr: initial step size, or an optax schedule whose ``lr(0)`` is used:
        torch reads the lr only to initialise the step sizes.
      etas: ``(etaminus, etaplus)``.
      step_sizes: ``(min, max)`` step size.

    Returns:
      An ``optax.GradientTransformation`` whose state is a
      :class:`TorchRpropState`.
    """
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    etaminus, etaplus = float(etas[0]), float(etas[1])
    step_size_min, step_size_max = float(step_sizes[0]), float(step_sizes[1])

    def init_fn(params):
        return TorchRpropState(
            step=jnp.zeros([], jnp.int32),
            prev=optax.tree.zeros_like(params),
            step_size=optax.tree.full_like(params, lr_at(lr, 0)),
        )

    def update_fn(updates, state, params=None):
        del params

        def one(g, prev, step_size):
            sign = jnp.sign(g * prev)
            factor = jnp.where(sign > 0, etaplus, jnp.where(sign < 0, etaminus, 1.0)).astype(step_size.dtype)
            step_size = jnp.clip(step_size * factor, step_size_min, step_size_max)
            g = jnp.where(sign < 0, jnp.zeros_like(g), g)
            return -jnp.sign(g) * step_size, g, step_size

        out = jax.tree.map(one, updates, state.prev, state.step_size)
        treedef = jax.tree.structure(updates)
        new_updates, prev, step_size = (
            jax.tree.unflatten(treedef, leaves) for leaves in zip(*treedef.flatten_up_to(out), strict=True)
        )
        return new_updates, TorchRpropState(optax.safe_increment(state.step), prev, step_size)

    return optax.GradientTransformation(init_fn, update_fn)


def rprop(
    lr: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Rprop, step for step as ``torch.optim.Rprop``.

    torch computes ``g = -g`` when ``maximize``, then the update of
    :func:`scale_by_torch_rprop` (the sign rule, with ``g`` zeroed where its
    sign changed).

    Compared with ``optax.rprop(learning_rate, eta_minus, eta_plus,
    min_step_size, max_step_size)``: the same defaults, but not torch's
    steps: after 12 steps on the test problem of ``tests/test_optim_torch.py``
    its weights are 22% (relative) away from torch's, because its sign rule
    and the memory of a zeroed gradient differ. optax has no ``maximize``.

    Optimizer state: a :class:`TorchRpropState` with torch's ``step``,
    ``prev`` and ``step_size``.

    Args:
      lr: initial step size, >= 0, or an optax schedule (only ``lr(0)`` is
        used: torch reads the lr once, to initialise the step sizes).
      etas: ``(etaminus, etaplus)`` with ``0 < etaminus < 1 < etaplus``.
      step_sizes: ``(min, max)`` bounds of the step sizes.
      maximize: ascend instead: torch negates the gradient first.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: for the arguments ``torch.optim.Rprop`` rejects.
    """
    lr = check_lr("rprop", "torch.optim.Rprop", lr)
    for arg, pair, example in (("etas", etas, "(0.5, 1.2)"), ("step_sizes", step_sizes, "(1e-6, 50)")):
        if isinstance(pair, str | bytes) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise ValueError(f"rprop got {arg}={pair!r}; expected a pair such as {arg}={example}.")
    if not 0.0 < etas[0] < 1.0 < etas[1]:
        raise ValueError(
            f"rprop got etas={tuple(etas)!r}; expected 0 < etaminus < 1 < etaplus, as torch.optim.Rprop "
            "does. Use e.g. etas=(0.5, 1.2)."
        )
    return maybe_maximize(maximize, scale_by_torch_rprop(lr, etas, step_sizes))
