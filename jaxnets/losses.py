"""Loss functions that compute what ``torch.nn.functional`` computes.

Every check below reads only shapes and dtypes, so it runs once in plain Python
while JAX traces the function and costs nothing in the compiled step.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from . import _split

__all__ = ["cross_entropy", "mse_loss"]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(loss_name: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"{loss_name} got reduction={reduction!r}; expected one of 'mean', 'sum' or 'none' "
            "(the values torch accepts)."
        )


def _reduce(loss: jax.Array, reduction: str) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(loss)
    if reduction == "sum":
        return jnp.sum(loss)
    return loss


def mse_loss(input: jax.Array, target: jax.Array, reduction: Reduction = "mean") -> jax.Array:
    """Squared error between ``input`` and ``target``, averaged or summed over all elements.

    PyTorch counterpart: ``torch.nn.functional.mse_loss`` (``torch.nn.MSELoss``).
    torch broadcasts ``input`` and ``target`` against each other and warns when
    their sizes differ; here ``target`` may broadcast to ``input.shape`` (the
    tutorial compares a ``(1, 10)`` output with a ``(10,)`` target) but may not
    enlarge it, so a transposed or mis-batched target is an error instead of a
    silently larger loss.

    Args:
      input: predictions, any shape.
      target: values to match, of ``input.shape`` or a shape that broadcasts to
        it, e.g. ``(10,)`` for an input of shape ``(1, 10)``.
      reduction: ``"mean"`` (average over every element), ``"sum"`` or
        ``"none"`` (the elementwise squared errors).

    Returns:
      A scalar for ``"mean"`` and ``"sum"``; an array of ``input.shape`` for
      ``"none"``.

    Raises:
      ValueError: if ``target`` does not broadcast to ``input.shape`` or
        ``reduction`` is not one of the three values above.
    """
    _check_reduction("mse_loss", reduction)
    args = (input, target)
    input = jnp.asarray(input)
    target = jnp.asarray(target)
    try:
        broadcast_shape = jnp.broadcast_shapes(input.shape, target.shape)
    except ValueError:
        broadcast_shape = None
    if broadcast_shape != input.shape:
        raise ValueError(
            f"mse_loss got `input` of shape {input.shape} and `target` of shape {target.shape}; "
            f"expected `target` of shape {input.shape} or a shape that broadcasts to it "
            f"(such as {input.shape[-1:]}). Reshape the target, e.g. target.reshape({input.shape}), "
            "if it holds the same number of elements."
        )
    out = _reduce(jnp.square(input - target), reduction)
    if reduction == "mean" and input.ndim and target.shape == input.shape:  # a mean over examples: see _split
        _split.mean_loss(*args, out)
    return out


def cross_entropy(logits: jax.Array, labels: jax.Array, reduction: Reduction = "mean") -> jax.Array:
    """Cross-entropy between unnormalised ``logits`` and integer or probability ``labels``.

    PyTorch counterpart: ``torch.nn.functional.cross_entropy``
    (``torch.nn.CrossEntropyLoss``) with its defaults, for logits of shape
    ``(N, C)`` or ``(C,)``. torch's ``weight``, ``ignore_index`` and
    ``label_smoothing`` are not supported.

    Integer labels are class indices. An index outside ``[0, C)`` cannot be
    detected inside ``jax.jit`` (torch raises at run time): it gives a NaN loss
    for that row, so a mean over the batch turns NaN. That includes torch's
    ``ignore_index`` value -100, which is not skipped here.

    Args:
      logits: unnormalised scores of shape ``(N, C)``, or ``(C,)`` for a single
        example; classes on the last axis. For per-position scores such as
        ``(N, H, W, C)`` use ``logits.reshape(-1, C)`` and ``labels.reshape(-1)``.
      labels: integer class indices of shape ``(N,)`` (``()`` for ``(C,)``
        logits), or float class probabilities of the same shape as ``logits``.
      reduction: ``"mean"`` (average over the N examples), ``"sum"`` or
        ``"none"`` (one loss per example).

    Returns:
      A scalar for ``"mean"`` and ``"sum"``; shape ``(N,)`` (or ``()``) for
      ``"none"``.

    Raises:
      ValueError: for logits that are not 1-D or 2-D, labels whose shape does
        not fit the logits, or an unknown ``reduction``.
      TypeError: for non-floating logits, or labels that are neither integer nor
        floating.
    """
    _check_reduction("cross_entropy", reduction)
    args = (logits, labels)
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim not in (1, 2):
        raise ValueError(
            f"cross_entropy expects `logits` of shape (N, C) or (C,); got shape {logits.shape}. "
            "For per-position scores with classes last, pass logits.reshape(-1, C) and "
            "labels.reshape(-1)."
        )
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(
            f"cross_entropy expects floating-point `logits`; got dtype {logits.dtype}. "
            "Convert them first, e.g. logits.astype(jnp.float32)."
        )
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    index_shape = logits.shape[:-1]
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != index_shape:
            raise ValueError(
                f"cross_entropy got integer `labels` of shape {labels.shape} for `logits` of shape "
                f"{logits.shape}; expected one class index per example, shape {index_shape}. "
                f"For one-hot or soft targets pass floats of shape {logits.shape} instead."
            )
        num_classes = logits.shape[-1]
        # mode="clip" keeps the gather in bounds; the jnp.where below turns every
        # out-of-range label (negative ones included) into NaN instead.
        picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1, mode="clip")[..., 0]
        in_range = (labels >= 0) & (labels < num_classes)
        loss = jnp.where(in_range, -picked, jnp.nan)
    elif jnp.issubdtype(labels.dtype, jnp.floating):
        if labels.shape != logits.shape:
            raise ValueError(
                f"cross_entropy got float `labels` of shape {labels.shape} for `logits` of shape "
                f"{logits.shape}; float labels are class probabilities and must have the shape "
                f"of the logits. For class indices of shape {index_shape} pass integers, e.g. "
                "labels.astype(jnp.int32)."
            )
        loss = -jnp.sum(labels * log_probs, axis=-1)
    else:
        raise TypeError(
            f"cross_entropy expects integer class indices or floating class probabilities as "
            f"`labels`; got dtype {labels.dtype}. Convert them, e.g. labels.astype(jnp.int32)."
        )
    out = _reduce(loss, reduction)
    if reduction == "mean" and logits.ndim == 2:  # a mean over the examples: see _split
        _split.mean_loss(*args, out)
    return out
