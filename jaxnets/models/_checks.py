"""Trace-time input checks shared by the fully connected models."""

from __future__ import annotations

import jax.numpy as jnp


def check_features(model: str, x, in_features: int) -> None:
    """Raise if ``x`` is not a floating array whose last axis has ``in_features`` entries."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) == 0:
        raise ValueError(
            f"{model} expects input of shape (batch, {in_features}) or ({in_features},); "
            f"got a scalar. Pass an array whose last axis holds the {in_features} features."
        )
    dtype = getattr(x, "dtype", None) or jnp.asarray(x).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{model} expects floating-point input; got dtype {dtype}. Convert it first, e.g. x.astype(jnp.float32)."
        )
    if shape[-1] != in_features:
        raise ValueError(
            f"{model} was built with in_features={in_features}; got input of shape {shape} "
            f"whose last axis has {shape[-1]} features. Build the model with "
            f"in_features={shape[-1]} or pass (batch, {in_features}) input."
        )
