"""Gradient clipping with torch.nn.utils' arithmetic: clip_grad_norm_, clip_grad_value_, get_total_norm."""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from .. import _extrema

_NONFINITE = (
    "The total norm of order {p} for gradients from `parameters` is non-finite, so it cannot be clipped. "
    "To disable this error and scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
)


class ClipGradNormState(NamedTuple):
    """State of :func:`clip_grad_norm`.

    Attributes:
      total_norm: scalar, the total gradient norm of the last update, before
        clipping: what ``torch.nn.utils.clip_grad_norm_`` returns (0 before the
        first update). Read it with :func:`total_norm`.
    """

    total_norm: jax.Array


def _vector_norm(x: jax.Array, p: float) -> jax.Array:
    """``torch.linalg.vector_norm(x, p)`` of a flattened array."""
    a = jnp.abs(jnp.ravel(x))
    if p == math.inf:
        return _extrema.amax(a, initial=0.0)  # NaN if a gradient holds one, as torch's; jnp.max may drop it
    if p == -math.inf:
        return _extrema.amin(a)
    if p == 0:
        return jnp.sum(a != 0).astype(a.dtype)
    if p == 1:
        return jnp.sum(a)
    if p == 2:
        return jnp.sqrt(jnp.sum(a * a))
    return jnp.sum(a**p) ** (1.0 / p)


def _check_norm_type(name: str, norm_type) -> float:
    try:
        p = float(norm_type)  # torch accepts what float() accepts, e.g. "inf"
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} got norm_type={norm_type!r}; expected a number, e.g. 2.0, 1.0 or float('inf')."
        ) from None
    if math.isnan(p):
        raise ValueError(f"{name} got norm_type=nan; expected a number, e.g. 2.0, 1.0 or float('inf').")
    return p


def _raise_nonfinite(total_norm, p: float) -> None:
    if not bool(jnp.isfinite(total_norm)):
        raise RuntimeError(_NONFINITE.format(p=p))


def get_total_norm(grads, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> jax.Array:
    """The norm of all of ``grads`` as one vector, computed as ``torch.nn.utils.get_total_norm``.

    torch takes the ``norm_type``-norm of each tensor, then the same norm of
    those norms (equal, up to rounding, to the norm of everything flattened).
    An empty pytree has norm 0.

    Args:
      grads: a pytree of arrays (``nnx.Variable`` leaves are read).
      norm_type: the ``p`` of the p-norm, any float; ``float('inf')`` (or
        ``"inf"``) for the largest absolute value.
      error_if_nonfinite: raise ``RuntimeError`` (torch's message) if the norm
        is NaN or infinite. Outside ``jit`` it is raised here; under ``jit``
        from a ``jax.debug.callback`` when the step runs, so it surfaces as a
        ``jax.errors.JaxRuntimeError`` (a ``RuntimeError``) holding torch's message.

    Returns:
      A scalar in the gradients' dtype.
    """
    p = _check_norm_type("get_total_norm", norm_type)
    leaves = _arrays(grads)
    if not leaves:
        return jnp.zeros([], jnp.float32)  # torch.tensor(0.0)
    norms = jnp.stack([_vector_norm(g, p) for g in leaves])
    total = _vector_norm(norms, p)
    if error_if_nonfinite:
        if isinstance(total, jax.core.Tracer):  # under jit, vmap or grad
            jax.debug.callback(_raise_nonfinite, total, p)
        else:
            _raise_nonfinite(total, p)
    return total


def _arrays(tree) -> list:
    """The arrays of a pytree whose leaves may be ``nnx.Variable`` (an ``nnx.Optimizer`` inits on those)."""
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return [leaf[...] if isinstance(leaf, nnx.Variable) else leaf for leaf in leaves]


def clip_grad_norm(
    max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> optax.GradientTransformation:
    """Scale all gradients together as ``torch.nn.utils.clip_grad_norm_`` does.

    torch computes the total norm of all gradients (:func:`get_total_norm`),
    ``clip_coef = max_norm / (total_norm + 1e-6)``, clamps it to at most 1 and
    multiplies every gradient by it, also when it is 1. The ``1e-6`` makes the
    clipped norm slightly below ``max_norm``, and a norm just above
    ``max_norm`` (within 1e-6) is left alone, which ``optax.clip_by_global_norm``
    (``max_norm / norm``, applied only when ``norm > max_norm``) does not do.
    A NaN norm makes every gradient NaN, an infinite one makes finite
    gradients 0, as in torch.

    Put it first in a chain, before :func:`param_groups`, to clip over all
    parameters as torch's ``clip_grad_norm_(model.parameters(), ...)`` does::

        tx = optax.chain(jaxnets.optim.clip_grad_norm(1.0), jaxnets.optim.sgd(lr=0.1))

    torch's return value, the norm before clipping, is kept in the state:
    ``jaxnets.optim.total_norm(opt_state)``.

    Args:
      max_norm: the largest total norm let through, >= 0.
      norm_type: the ``p`` of the p-norm, any float; ``float('inf')`` for the
        largest absolute value.
      error_if_nonfinite: raise torch's ``RuntimeError`` when the total norm is
        NaN or infinite. The check runs on the device: outside ``jit`` it raises
        ``RuntimeError`` directly; under ``jit`` a ``jax.debug.callback``
        raises it when the step runs, and JAX reports it as a
        ``jax.errors.JaxRuntimeError`` (a subclass of ``RuntimeError``)
        holding torch's message. The state and
        parameters passed in are not changed (JAX arrays are immutable).

    Returns:
      An ``optax.GradientTransformation`` whose state is a
      :class:`ClipGradNormState`.

    Raises:
      ValueError: for a negative or NaN ``max_norm`` (torch accepts a negative
        one and flips every gradient; refused here) or a ``norm_type`` that is
        not a number.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) and not _is_scalar(max_norm):
        raise ValueError(f"clip_grad_norm got max_norm={max_norm!r}; expected a number >= 0, e.g. 1.0.")
    max_norm = float(max_norm)
    if not max_norm >= 0:
        raise ValueError(
            f"clip_grad_norm got max_norm={max_norm!r}; expected a number >= 0 (torch accepts a negative one and "
            "flips the sign of every gradient). Pass e.g. max_norm=1.0."
        )
    p = _check_norm_type("clip_grad_norm", norm_type)

    def init_fn(params):
        leaves = _arrays(params)
        dtype = jnp.result_type(*leaves) if leaves else jnp.float32
        return ClipGradNormState(total_norm=jnp.zeros([], dtype))

    def update_fn(updates, state, params=None):
        del params
        total = get_total_norm(updates, p, error_if_nonfinite)
        clip_coef_clamped = jnp.minimum(max_norm / (total + 1e-6), 1.0)
        updates = jax.tree.map(lambda g: g * clip_coef_clamped.astype(g.dtype), updates)
        return updates, ClipGradNormState(total_norm=total.astype(state.total_norm.dtype))

    return optax.GradientTransformation(init_fn, update_fn)


def _is_scalar(value) -> bool:
    return getattr(value, "shape", None) == () and jnp.issubdtype(getattr(value, "dtype", None), jnp.floating)


def clip_grad_value(clip_value: float) -> optax.GradientTransformation:
    """Clamp every gradient to ``[-clip_value, clip_value]``, as ``torch.nn.utils.clip_grad_value_``.

    The same update as ``optax.clip(clip_value)``; stateless.

    Args:
      clip_value: the largest absolute gradient value let through, >= 0
        (torch accepts a negative one and sets every gradient to it; refused
        here).

    Returns:
      An ``optax.GradientTransformation`` with an ``optax.EmptyState``.
    """
    if isinstance(clip_value, bool) or not isinstance(clip_value, numbers.Real) and not _is_scalar(clip_value):
        raise ValueError(f"clip_grad_value got clip_value={clip_value!r}; expected a number >= 0, e.g. 1.0.")
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(
            f"clip_grad_value got clip_value={clip_value!r}; expected a number >= 0 (torch accepts a negative one "
            "and sets every gradient to it). Pass e.g. clip_value=1.0."
        )

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: jnp.clip(g, -clip_value, clip_value), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def total_norm(opt_state) -> jax.Array:
    """The total norm that :func:`clip_grad_norm` measured at the last update, read from an optimizer state.

    ``opt_state`` is the state of a chain holding exactly one
    :func:`clip_grad_norm` (``tx.init``/``tx.update``'s state, an
    ``nnx.Optimizer``'s ``opt_state``, or a ``Trainer``'s). This is the value
    ``torch.nn.utils.clip_grad_norm_`` returns, for logging.

    Raises:
      ValueError: if the state holds no :class:`ClipGradNormState`, or several.
    """
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, ClipGradNormState))
        if isinstance(s, ClipGradNormState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"total_norm expects an optimizer state with exactly one ClipGradNormState; this one has {len(found)}. "
            + (
                "Put jaxnets.optim.clip_grad_norm(max_norm) in the chain, e.g. optax.chain(clip_grad_norm(1.0), tx)."
                if not found
                else "Read each with [s.total_norm for s in jax.tree.leaves(state, is_leaf=...)]."
            )
        )
    norm = found[0].total_norm
    return norm[...] if isinstance(norm, nnx.Variable) else norm
