"""Shared pieces of jaxnets.optim: learning-rate validation, ``maximize``."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import jax
import numpy as np
import optax


def check_lr(name: str, torch_name: str, lr) -> float | Callable:
    """Validate ``lr`` as torch does; return it as a Python float, or the schedule unchanged.

    ``lr`` is a number >= 0 or an optax schedule (a callable ``count -> lr``).
    A schedule gives torch's lr of step ``t`` (from 1) at ``count = t - 1``.
    """
    if callable(lr):
        return lr
    if _is_scalar_array(lr):
        lr = float(lr)  # a 0-d NumPy or JAX array, e.g. jnp.float32(0.01)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise ValueError(
            f"{name} got lr={lr!r} of type {type(lr).__name__}; expected a number >= 0 or an optax "
            "schedule (a callable count -> lr). Pass e.g. lr=0.01 or lr=optax.constant_schedule(0.01)."
        )
    if not 0.0 <= lr:
        raise ValueError(
            f"{name} got lr={lr!r}; expected a value >= 0, as {torch_name} does. Pass a non-negative `lr`."
        )
    # Python floats stay weakly typed: a NumPy float64 would promote float32 leaves under x64.
    return float(lr)


def _is_scalar_array(value) -> bool:
    dtype = getattr(value, "dtype", None)
    return (
        dtype is not None
        and getattr(value, "shape", None) == ()
        and np.issubdtype(dtype, np.number)
        and not np.issubdtype(dtype, np.complexfloating)
    )


def lr_at(lr, count):
    """The learning rate of the step whose zero-based index is ``count``."""
    return lr(count) if callable(lr) else lr


def negate() -> optax.GradientTransformation:
    """``g -> -g``, stateless: torch's ``maximize=True``, applied first, before weight decay."""

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: -g, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def maybe_maximize(maximize: bool, tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` after :func:`negate` when ``maximize``; ``tx`` itself (and its state) otherwise."""
    return optax.chain(negate(), tx) if maximize else tx


def check_nonnegative(name: str, torch_name: str, **values: float) -> None:
    """Raise the ValueError torch raises for a negative (or NaN) hyperparameter."""
    for arg, value in values.items():
        if not 0.0 <= value:
            raise ValueError(
                f"{name} got {arg}={value!r}; expected a value >= 0, as {torch_name} does. Pass a non-negative `{arg}`."
            )
