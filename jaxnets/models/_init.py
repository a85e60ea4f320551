"""PyTorch's default initialisation for ``nn.Linear`` and ``nn.Conv2d``, as Flax initialisers.

PyTorch initialises both layers with ``kaiming_uniform_(weight, a=sqrt(5))`` and
a bias drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. The kaiming gain for
``a=sqrt(5)`` is ``sqrt(2 / (1 + 5)) = sqrt(1/3)``, so the weight bound is
``sqrt(1/3) * sqrt(3 / fan_in) = 1 / sqrt(fan_in)`` as well: weights and biases
share one uniform bound. ``fan_in`` is ``in_features`` for a linear layer and
``in_channels * kh * kw`` for a convolution.

Flax's own initialisers (``nnx.initializers.lecun_normal()``, ``zeros``...) stay
selectable: every model takes ``kernel_init`` and ``bias_init``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from .. import _draw
from ._fastconv import FastConv


def torch_kernel_init() -> nnx.Initializer:
    """PyTorch's default weight initialisation, ``kaiming_uniform_(a=sqrt(5))``.

    Flax kernels are ``(in, out)`` for linear layers and ``(kh, kw, in, out)``
    for convolutions, so ``fan_in`` is the product of all axes but the last and
    the bound is ``1 / sqrt(fan_in)`` exactly as in PyTorch. (The same law as
    ``nnx.initializers.variance_scaling(1/3, "fan_in", "uniform")``.)

    Returns:
      An initialiser ``(key, shape, dtype) -> Array``.
    """

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return uniform(key, shape, dtype, bound(kernel_fan_in(shape)))

    return init


def kernel_fan_in(shape) -> int:
    """Inputs per output unit of a Flax kernel of ``shape``: the product of all axes but the last.

    Flax kernels put the inputs on axis -2 and the outputs on axis -1; every
    other axis is receptive field.
    """
    return math.prod(shape[:-1])


def bound(fan_in: int) -> float:
    """PyTorch's default uniform bound for a layer's weights and bias alike: ``1 / sqrt(fan_in)``."""
    return 1.0 / math.sqrt(fan_in)


def torch_bias_init(fan_in: int) -> nnx.Initializer:
    """PyTorch's default bias initialisation, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    Flax bias initialisers only see the bias shape, so ``fan_in`` is bound here.

    Args:
      fan_in: inputs per output unit: ``in_features``, or
        ``in_channels * kh * kw`` for a convolution.

    Returns:
      An initialiser ``(key, shape, dtype) -> Array``.
    """
    if fan_in <= 0:
        raise ValueError(f"`fan_in` must be positive; got {fan_in}.")
    b = bound(fan_in)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return uniform(key, shape, dtype, b)

    return init


def uniform(key: jax.Array, shape, dtype, bound) -> jax.Array:
    """``U(-bound, bound)`` of ``shape``, drawn flat, then reshaped.

    Flat because XLA:CPU compiles the multi-dimensional threefry program two to
    four times slower; drawn by :mod:`jaxnets._draw`, one compiled program for
    every shape, with ``jax.random.uniform``'s values.
    """
    return _draw.uniform(key, shape, dtype, bound)


def linear(
    in_features: int,
    out_features: int,
    *,
    use_bias: bool = True,
    kernel_init: nnx.Initializer | None = None,
    bias_init: nnx.Initializer | None = None,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """``nnx.Linear`` initialised like ``torch.nn.Linear`` unless told otherwise."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        kernel_init=kernel_init or torch_kernel_init(),
        bias_init=bias_init or torch_bias_init(in_features),
        param_dtype=param_dtype,
        rngs=rngs,
    )


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    kernel_init: nnx.Initializer | None = None,
    bias_init: nnx.Initializer | None = None,
    param_dtype=jnp.float32,
    fast: bool = False,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """``nnx.Conv`` with ``torch.nn.Conv2d``'s padding (0, i.e. VALID), stride 1 and init.

    With ``fast=True`` a :class:`~jaxnets._fastconv.FastConv`: the same parameters
    and initialisation, a different computation.
    """
    params = dict(
        kernel_init=kernel_init or torch_kernel_init(),
        bias_init=bias_init or torch_bias_init(in_channels * kernel_size * kernel_size),
        param_dtype=param_dtype,
        rngs=rngs,
    )
    if fast:
        return FastConv(in_channels, out_channels, kernel_size, **params)  # always VALID, stride 1
    # nnx defaults to padding "SAME"; torch's default padding is 0.
    return nnx.Conv(in_channels, out_channels, (kernel_size, kernel_size), strides=(1, 1), padding="VALID", **params)
